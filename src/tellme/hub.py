"""Models from the Hugging Face Hub, kept in its standard cache: `pull`, `cached_models`, `remove`.

Downloading happens here only, when the user asks (`tellme pull`, `-m ID --pull`); loading reads
the cache offline (loading.resolve). huggingface_hub does the transfer (resuming a partial file,
HF_TOKEN, HF_ENDPOINT, hf_xet where installed); tellme picks the files, checks each against the
checksum the Hub lists for it (sha256 for LFS files, the git blob hash for the rest), and reads the
result as it would to run it, so a model tellme cannot run is reported at pull time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from .config import LINEAR_NAMES
from .errors import FormatError, UsageError
from .loading import choose_files, hf_cache_dir, read_packed, split_ref

def pull(ref: str, revision: str | None = None, timeout: float = 30.0) -> Path:
    """Downloads `ref` into the Hugging Face cache (or finds it there), verifies and reads it;
    returns the path `load` takes. Progress bars are huggingface_hub's
    (HF_HUB_DISABLE_PROGRESS_BARS=1 hides them)."""
    from huggingface_hub import HfApi

    repo, selector = split_ref(ref)
    with _hub_errors(repo, timeout):
        info = HfApi().model_info(repo, revision=revision, files_metadata=True, timeout=timeout)
        siblings = {s.rfilename: s for s in info.siblings or ()}
        files = choose_files(repo, list(siblings), selector)
        paths = [_fetch(repo, name, revision, timeout, siblings[name]) for name in files]
    target = paths[0] if files[0].endswith(".gguf") else paths[0].parent
    try:
        read_packed(target)  # every tensor and the tokenizer read as `load` reads them
    except (FormatError, UsageError, ValueError) as e:
        raise FormatError(f"{repo} was downloaded, but tellme cannot run it: {e}") from None
    return target


def _fetch(repo: str, name: str, revision: str | None, timeout: float, sibling) -> Path:
    """One file into the cache. Over plain HTTP the bytes go to a partial file of a fixed name
    beside the blob, written as they arrive, so an interrupted pull resumes where it stopped
    (huggingface_hub's own partial files are per process and removed on failure), and only bytes
    that match the checksum become the blob; hf_hub_download then links it into the snapshot (or
    fetches it itself over hf_xet, whose chunk cache keeps what an interrupted transfer got)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name

    meta = get_hf_file_metadata(hf_hub_url(repo, name, revision=revision), timeout=timeout)
    if meta.xet_file_data is None and meta.etag:
        blob = Path(hf_cache_dir()) / repo_folder_name(repo_id=repo, repo_type="model") / "blobs" / meta.etag
        if not blob.exists():
            part = blob.with_name(blob.name + ".tellme-partial")
            part.parent.mkdir(parents=True, exist_ok=True)
            if meta.size is not None and part.exists() and part.stat().st_size > meta.size:
                part.unlink()
            _resume(meta.location, part, meta.size, name, timeout)
            _verify(repo, name, part, sibling)
            part.rename(blob)
    path = Path(hf_hub_download(repo, name, revision=revision, etag_timeout=timeout))
    _verify(repo, name, path, sibling)
    return path


def _resume(url: str, part: Path, size: int | None, name: str, timeout: float) -> None:
    """Appends the rest of `url` to `part` (a range request from its length)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
    from tqdm.auto import tqdm

    with open(part, "ab") as f:
        have = f.tell()
        if size is not None and have >= size:
            return
        headers = {**build_hf_headers(), **({"Range": f"bytes={have}-"} if have else {})}
        with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
            hf_raise_for_status(r)
            if have and r.status_code != 206:  # the server sent the whole file
                f.truncate(0)
                have = 0
            with tqdm(total=size, initial=have, unit="B", unit_scale=True, desc=name, leave=False,
                      disable=None) as bar:
                for chunk in r.iter_bytes():  # as they arrive: an interruption keeps them
                    f.write(chunk)
                    f.flush()
                    bar.update(len(chunk))


def _verify(repo: str, name: str, path: Path, sibling) -> None:
    """The file's bytes against the Hub's checksum; a mismatch removes the file."""
    lfs = getattr(sibling, "lfs", None)
    if lfs is not None:
        want, got = lfs.sha256, _digest(path, hashlib.sha256())
    elif getattr(sibling, "blob_id", None):
        size = path.stat().st_size
        want, got = sibling.blob_id, _digest(path, hashlib.sha1(f"blob {size}\0".encode()))
    else:
        return
    if want != got:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise FormatError(f"{repo}/{name}: the downloaded bytes do not match the Hub's checksum ({got} != {want}); "
                          "the file was removed: pull again")


def _digest(path: Path, h) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _hub_errors:
    """The Hub's and the network's failures as one clear UsageError each."""

    def __init__(self, repo: str, timeout: float):
        self.repo, self.timeout = repo, timeout

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (UsageError, FormatError, KeyboardInterrupt)):
            return False
        from huggingface_hub import constants
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                            RepositoryNotFoundError, RevisionNotFoundError)

        where = constants.ENDPOINT
        if isinstance(e, GatedRepoError):
            msg = f"{self.repo} is gated: accept its terms on the Hub and set HF_TOKEN"
        elif isinstance(e, RepositoryNotFoundError):
            msg = (f"{self.repo} was not found on {where} (or it is private: set HF_TOKEN to a token that may "
                   "read it)")
        elif isinstance(e, RevisionNotFoundError):
            msg = f"{self.repo} has no such revision"
        elif isinstance(e, OfflineModeIsEnabled):
            msg = "HF_HUB_OFFLINE is set: pulling needs the network"
        elif isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:  # httpx's or httpx2's
            msg = f"{where} did not answer within {self.timeout:g} s (--timeout sets it)"
        elif isinstance(e, HfHubHTTPError):
            msg = f"the Hub refused: {str(e).splitlines()[0]}"
        elif isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore",
                                                                            "httpcore2"):
            msg = f"cannot reach {where}: {e}"
        else:
            return False
        raise UsageError(f"pull {self.repo}: {msg}") from None


@dataclass
class CachedModel:
    id: str            # what -m takes: owner/name, or owner/name:FILE for one of several GGUF files
    format: str        # "gguf" or "hf"
    path: Path
    size_bytes: int
    parameters: int | None
    quant: str | None
    last_used: float   # seconds since the epoch (the cache's access time)


def cached_models() -> list[CachedModel]:
    """The models in the Hugging Face cache that tellme can run (their newest revision)."""
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir(hf_cache_dir())
    except Exception:  # noqa: BLE001 - no cache directory yet, or an unreadable one: nothing cached
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: r.last_modified)
        names = {f.file_name: f for f in rev.files}
        ggufs = sorted(f for f in names if f.endswith(".gguf"))
        for name in ggufs:
            model_id = repo.repo_id if len(ggufs) == 1 else f"{repo.repo_id}:{name}"
            found.append(_describe(model_id, "gguf", rev.snapshot_path / name, names[name].size_on_disk,
                                   repo.last_accessed))
        if not ggufs and "config.json" in names:
            found.append(_describe(repo.repo_id, "hf", rev.snapshot_path, rev.size_on_disk, repo.last_accessed))
    return [m for m in found if m is not None]


def _describe(model_id: str, fmt: str, path: Path, size: int, used: float) -> CachedModel | None:
    from .loading import open_checkpoint

    try:
        reader = open_checkpoint(path)
    except (FormatError, UsageError, ValueError, OSError):
        return None  # not a model tellme can run
    c = reader.config
    params = c.layers * sum(a * b for a, b in map(c.linear_shape, LINEAR_NAMES))
    params += c.vocab * c.hidden * (1 if c.tied_embeddings else 2)
    if fmt == "gguf":  # the type of the first layer's first linear
        quant = next((t.type_name for n, t in reader.file.tensors.items() if n.startswith("blk.0.attn_q")), None)
    else:
        quant = reader.linear_class  # how the ternary linears are stored (formats/hf.py)
    return CachedModel(model_id, fmt, path, size, params, quant, used or time.time())


def remove(model_id: str) -> int:
    """Deletes a cached model (every revision) through huggingface_hub's cache API; the bytes freed."""
    from huggingface_hub import scan_cache_dir

    repo_id, _ = split_ref(model_id)
    cache = scan_cache_dir(hf_cache_dir())
    repo = next((r for r in cache.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        raise UsageError(f"{repo_id} is not in the Hugging Face cache ({hf_cache_dir()}); `tellme list` shows "
                         "what is")
    strategy = cache.delete_revisions(*(r.commit_hash for r in repo.revisions))
    strategy.execute()
    return strategy.expected_freed_size
