"""`load`: from a name on disk to a ready `Model`, in one place.

    name -> path        "default" (the shipped model), a path, or a Hugging Face model id found in
                        the local cache (never downloaded)
    path -> reader      a GGUF file or a Hugging Face directory (formats/)
    reader -> packed    PackedModel.pack, or PackedModel.open for a file from `tellme convert`
    packed -> Model     the engine built over it
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from . import runtime
from .errors import FormatError, UsageError
from .formats.gguf_file import is_gguf
from .formats.gguf_model import GGUFCheckpoint
from .formats.hf import HFCheckpoint
from .kernels import KERNELS
from .model import Model
from .packed import DEFAULT_HEAD, HEADS, PackedModel
from .tokenizer import Tokenizer


def default_model_path() -> Path:
    """Directory of the small model shipped with tellme (trained by `tellme train`, see README)."""
    return Path(__file__).resolve().parent / "default_model"


def hf_cache_dir() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def resolve(name: str | os.PathLike) -> Path:
    """The path of a model named on the command line or to `load`."""
    if str(name) == "default":
        path = default_model_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"the default model is missing from this installation ({path})")
        return path
    path = Path(name).expanduser()
    if path.exists():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+(:[^/]+)?", str(name)) and not str(name).startswith((".", "~")):
        return _from_hf_cache(*split_ref(str(name)))  # owner/name[:FILE or :QUANT]
    raise FileNotFoundError(f"model not found: {name}")


# an HF checkpoint: its weights, config and tokenizer, nothing else from the repo
CHECKPOINT_FILES = re.compile(r"^[^/]*(\.safetensors|\.json|tokenizer\.model)$")


def split_ref(ref: str) -> tuple[str, str | None]:
    """"owner/name[:FILE or :QUANT]" -> (repo id, selector)."""
    repo, _, selector = ref.partition(":")
    if len(repo.split("/")) != 2 or not all(repo.split("/")):
        raise UsageError(f"{ref!r}: give a Hub model id, owner/name, optionally :FILE or :QUANT (e.g. :TQ2_0)")
    return repo, selector or None


def choose_files(repo: str, files: list[str], selector: str | None) -> list[str]:
    """The files of `repo` that tellme needs: one GGUF (picked by name or quant type when there
    are several), or an HF checkpoint's weights, config and tokenizer."""
    ggufs = sorted(f for f in files if f.endswith(".gguf"))
    if selector is not None:
        exact = [f for f in ggufs if f == selector or f.rsplit("/", 1)[-1] == selector]
        by_type = [f for f in ggufs if re.search(rf"(^|[-_.]){re.escape(selector)}([-_.]|$)",
                                                 f.rsplit("/", 1)[-1], re.IGNORECASE)]
        chosen = exact or by_type
        if len(chosen) != 1:
            what = "matches none of" if not chosen else "matches several of"
            raise UsageError(f"{repo}:{selector} {what} its GGUF files: {', '.join(ggufs) or 'it has none'}")
        return chosen
    if len(ggufs) > 1:
        raise UsageError(f"{repo} holds several GGUF files; pick one with {repo}:FILE or {repo}:QUANT: "
                         + ", ".join(ggufs))
    if ggufs:
        return ggufs
    if "config.json" not in files:
        raise FormatError(f"{repo} has neither a .gguf file nor config.json: not a model tellme can run")
    return sorted(f for f in files if CHECKPOINT_FILES.match(f))


def _from_hf_cache(repo_id: str, selector: str | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        # pulled at another revision than main: its newest snapshot
        snapshots = Path(hf_cache_dir()) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
        newest = max(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, default=None) if snapshots.is_dir() else None
        if newest is not None:
            return _choose_in(repo_id, newest, selector)
        raise FileNotFoundError(
            f"model not found: {repo_id!r} is not a path, and not in the Hugging Face cache ({hf_cache_dir()}); "
            f"tellme downloads only when asked: `tellme pull {repo_id}` (or -m {repo_id} --pull), or set HF_HOME"
        ) from None
    return _choose_in(repo_id, snapshot, selector)


def _choose_in(repo_id: str, snapshot: Path, selector: str | None) -> Path:
    files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
    chosen = choose_files(repo_id, files, selector)
    return snapshot / chosen[0] if chosen[0].endswith(".gguf") else snapshot


def open_checkpoint(path: Path) -> HFCheckpoint | GGUFCheckpoint:
    """The format reader of a GGUF file or a Hugging Face directory (see formats/__init__.py)."""
    if is_gguf(path):
        return GGUFCheckpoint(path)
    if path.is_dir():
        return HFCheckpoint(path)
    raise FormatError(f"{path}: neither a checkpoint directory nor a GGUF file")


def progress_bar(desc: str, enabled: bool):
    """A wrapper of iterables that shows a bar once the work has taken a second."""
    if not enabled:
        return iter
    from tqdm.auto import tqdm
    return lambda it: tqdm(it, desc=desc, leave=False, delay=1.0)


def read_packed(path: Path, head: str | None = None, kernel: str = "auto",
                progress: bool = False) -> tuple[PackedModel, Tokenizer | None]:
    """The packed model and tokenizer at `path`: packed now (head None: DEFAULT_HEAD), or mapped
    from a converted file (head None: the file's own)."""
    if path.is_file() and not is_gguf(path):
        if not PackedModel.is_converted_file(path):
            raise FormatError(f"{path}: neither a GGUF file nor a tellme model file (convert a checkpoint "
                              "directory with `tellme convert`)")
        packed, tokenizer = PackedModel.open(path)
        if head is not None and packed.head != head:
            raise FormatError(f"{path}: converted with a {packed.head} LM head; {head} was asked for "
                              f"(convert again with --head {head})")
        return packed, tokenizer
    reader = open_checkpoint(path)
    return PackedModel.pack(reader, head or DEFAULT_HEAD, kernel, progress_bar("packing", progress)), reader.tokenizer


def load(path: str | os.PathLike = "default", threads: int | str | None = None, context: int | None = None,
         head: str | None = None, kernel: str = "auto", progress: bool | None = None,
         max_sequences: int | None = None, numerics: str = "native", kv: str | None = None) -> Model:
    """Load a model: a Hugging Face checkpoint directory, a GGUF file (llama.cpp's TQ1_0/TQ2_0 or
    bitnet.cpp's I2_S), a file written by `tellme convert`, a Hugging Face model id already in the
    local cache, or "default" for the small model shipped with tellme.

    threads: native threads, or "auto" (the default: up to the physical cores, as many as other programs
    leave free); context: KV cache length in tokens
    (default: the model's max_position_embeddings; memory is committed only as it fills);
    head: the embedding and LM head, "int6" (6-bit rows with per-row scales, 3/4 of the int8
    head's bytes: the default, or a converted file's own), "int8" (per-row scales) or "fp32"; kernel: "auto",
    "tlmm" or "i2" for every ternary linear (ignored for converted files); max_sequences: how many
    generations may run at once (each has its own KV cache; default 8, fewer if memory is short);
    numerics: "native" (the fast engine), or "tellme-v2" to run the TeLLMe v2 accelerator's datapath
    in NumPy (fp16, 24-bit TLMM accumulators, the SiLU table: a golden model, slow; docs/accel.md)
    or "tellme-v2-ideal" (the same dataflow with none of its approximations); kv: the KV cache format,
    "f16" (the default) or "q8" (int8 values with a scale per head and position: half the bytes that
    decode reads at depth; native numerics only).
    """
    if head is not None and head not in HEADS:
        raise UsageError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if kernel not in ("auto", *KERNELS):
        raise UsageError(f"kernel must be 'auto' or one of {', '.join(KERNELS)}, got {kernel!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"path must be a str or path, got {type(path).__name__}")
    resolved = resolve(path)
    if threads is not None:
        runtime.set_num_threads(threads)
    if progress is None:
        progress = sys.stderr.isatty()
    packed, tokenizer = read_packed(resolved, head, kernel, progress)
    return Model(packed, tokenizer, context, max_sequences, numerics, kv)
