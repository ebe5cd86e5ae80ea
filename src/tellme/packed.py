"""`PackedModel`: every tensor the native engine needs, in the kernels' layouts, with one owner.

It is built from a format reader (`PackedModel.pack`, in memory), written as tellme's converted
file (`save`: one safetensors file with the configuration and tokenizer in its metadata) and
opened from that file as memory-mapped views (`open`, no repacking). Only this module knows the
tensor names:

    layers.{i}.{q,k,v,o,gate,up,down}.{tiles,neg_count | codes}, .scale   ternary linears
    layers.{i}.{...}.group_scale                                           per-group scales (Bonsai)
    layers.{i}.{attn_norm,ffn_norm,attn_sub_norm,ffn_sub_norm}            fp32 norms
    embedding.q / embedding.row_scale (int8 head), embedding.q6 / .row_scale
    (6-bit head, layout.pack_int6) or embedding.f32                       [vocab, hidden]
    lm_head.*  (absent when config.tied_embeddings), final_norm

q and k rows are reordered per head so that RoPE's pairs (j, j + head_dim/2) are adjacent rows
(2j, 2j+1): the matmul epilogue then rotates within one row block. Attention scores are dot
products over the head, which the same reordering of q and k leaves unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

import numpy as np

from . import _core
from .config import LINEAR_NAMES, NORM_NAMES, ModelConfig
from .errors import FormatError, UsageError
from .formats.safetensors import SafetensorsFile
from .formats.safetensors import write as write_safetensors
from .kernels import TernaryWeights, layout
from .kernels.layout import round_up
from .rope import rope_pair_order
from .tokenizer import Tokenizer

HEADS = ("int8", "int6", "fp32")  # embedding / LM head precision
# 6-bit rows: 3/4 of the int8 head's bytes (a 2B-4T decode step reads 82 MB less) for a perplexity
# change within +-0.1% on the shipped model (docs/benchmarks.md)
DEFAULT_HEAD = "int6"
FORMAT_VERSION = "2"        # of the converted file (2: i2 codes in I2_S bit order)


@dataclass(frozen=True)
class Rows:
    """The embedding table or LM head [vocab, hidden]: int8 rows (q) or 6-bit rows (q6, as
    layout.pack_int6 packs them, `hidden` values each) with per-row scales, or fp32."""

    q: np.ndarray | None = None
    row_scale: np.ndarray | None = None
    f32: np.ndarray | None = None
    q6: np.ndarray | None = None
    hidden: int = 0  # of q6 rows

    @property
    def stored(self) -> np.ndarray:
        """The integer rows as stored: q, or the packed q6."""
        return self.q if self.q is not None else self.q6

    def integers(self) -> np.ndarray:
        """The int8 or 6-bit rows as int8 [vocab, hidden]."""
        return self.q if self.q is not None else layout.unpack_int6(self.q6, self.hidden)

    def float32(self) -> np.ndarray:
        if self.f32 is not None:
            return self.f32
        return self.integers().astype(np.float32) * self.row_scale[:, None]


def quantize_rows_int8(e: np.ndarray) -> Rows:
    """Per-row absmax int8, e ~= q * row_scale[:, None] (the activations' quantizer, native and
    parallel: q = round-half-even(e * 127 / amax) with amax at least 1e-5). e: float rows, or
    fp16 rows as uint16 bits (widened natively)."""
    e = np.ascontiguousarray(e) if e.dtype == np.uint16 else np.ascontiguousarray(e, dtype=np.float32)
    try:
        q, s = _core.quantize(e)
    except ValueError as err:  # NaN or Inf
        raise FormatError(str(err)) from None
    return Rows(q=q, row_scale=s)


def quantize_rows_int6(e: np.ndarray) -> Rows:
    """Per-row absmax to 6 bits (native, parallel; layout.quantize_int6 is the reference).
    e: float rows, or fp16 rows as uint16 bits."""
    e = np.ascontiguousarray(e) if e.dtype == np.uint16 else np.ascontiguousarray(e, dtype=np.float32)
    try:
        q6, scale = _core.quantize_int6(e)
    except ValueError as err:  # NaN or Inf
        raise FormatError(str(err)) from None
    return Rows(q6=q6, row_scale=scale, hidden=e.shape[1])


QUANTIZE_ROWS = {"int8": quantize_rows_int8, "int6": quantize_rows_int6}

TABLE_BLOCK_BYTES = 4 << 20  # float32 bytes of an embedding or head converted at a time when streaming


class PackedModel:
    def __init__(self, config: ModelConfig, tensors: dict[str, np.ndarray] | None = None, source: str = ""):
        self.config = config
        self.source = source or "model"
        self._t: dict[str, np.ndarray] = dict(tensors or {})
        self.load_paths: dict[str, dict[str, int]] = {}  # tensor kind -> {how it was loaded: count}

    def _loaded(self, kind: str, how: str) -> None:
        counts = self.load_paths.setdefault(kind, {})
        counts[how] = counts.get(how, 0) + 1

    # ---- building ----
    @classmethod
    def pack(cls, reader, head: str = DEFAULT_HEAD, kernel: str = "auto",
             progress: Callable[[Iterator], Iterator] = iter) -> "PackedModel":
        """Every tensor of `reader` (see formats/__init__.py) in the engine's layout."""
        if head not in HEADS:
            raise UsageError(f"unknown head type {head!r}; expected one of {', '.join(HEADS)}")
        c: ModelConfig = reader.config
        m = cls(c, source=str(getattr(reader, "path", "")))
        direct = getattr(reader, "packed_linear", None) if kernel in ("auto", "i2") else None
        for i in progress(range(c.layers)):
            for name in LINEAR_NAMES:
                packed = direct(i, name) if direct else None
                if packed is not None:  # the reader gave the i2 layout itself (GGUF: in place or repacked)
                    m.set_linear(i, name, packed[0])
                    m._loaded("linear", packed[1])
                else:
                    m.pack_linear(i, name, *reader.linear(i, name), kernel)
                    m._loaded("linear", "unpacked and packed")
            for name in c.norm_names():
                gamma = reader.norm(i, name)
                if name in ("q_norm", "k_norm"):  # over a head's rows, in their RoPE-pair order
                    gamma = np.asarray(gamma)[rope_pair_order(1, c.head_dim)]
                m.set_norm(i, name, gamma)
        for table in ("embedding",) if c.tied_embeddings else ("embedding", "lm_head"):
            if hasattr(reader, "table_rows"):
                m._stream_rows(table, reader, head, progress)
            else:
                m.set_rows(table, reader.embedding() if table == "embedding" else reader.lm_head(), head)
                m._loaded(table, f"{head} from a whole float32 table")
        m.set_final_norm(reader.final_norm())
        return m

    def _stream_rows(self, table: str, reader, head: str, progress: Callable[[Iterator], Iterator] = iter) -> None:
        """The table converted a block of rows at a time into its final arrays: no float32
        copy of the whole table (unless the fp32 head is asked for, which is that copy)."""
        c = self.config
        if head == "fp32":
            f32 = np.empty((c.vocab, c.hidden), np.float32)
        else:  # the integer rows as stored, filled block by block
            ints = (np.empty((c.vocab, c.hidden), np.int8) if head == "int8"
                    else np.empty((c.vocab, layout.int6_row_bytes(c.hidden)), np.uint8))
            row_scale = np.empty(c.vocab, np.float32)
        step = max(1, TABLE_BLOCK_BYTES // (4 * c.hidden))
        for r0 in progress(range(0, c.vocab, step)):
            r1 = min(c.vocab, r0 + step)
            block = reader.table_rows(table, r0, r1)  # float32, or fp16 as uint16 bits
            if head == "fp32":
                f32[r0:r1] = self._finite(block.view(np.float16) if block.dtype == np.uint16 else block,
                                          f"{table} rows {r0}-{r1}")
            else:
                try:
                    rows = QUANTIZE_ROWS[head](block)
                except FormatError:  # the quantizers refuse NaN and Inf
                    raise FormatError(f"{self.source}: {table} rows {r0}-{r1} hold NaN or infinite values") from None
                ints[r0:r1], row_scale[r0:r1] = rows.stored, rows.row_scale
        self.set_rows(table, Rows(f32=f32) if head == "fp32" else Rows(q=ints, row_scale=row_scale) if head == "int8"
                      else Rows(q6=ints, row_scale=row_scale, hidden=c.hidden))
        self._loaded(table, f"{head}, streamed in blocks of {step} rows")

    def pack_linear(self, layer: int, name: str, ternary: np.ndarray, scale, kernel: str = "auto") -> None:
        """Packs a ternary matrix given in Hugging Face row order (q and k rows reordered here).
        scale: one number, or group scales [out, in / group] (the i2 kernel)."""
        grouped = np.ndim(scale) > 0
        if not (np.isfinite(scale).all() if grouped else np.isfinite(scale) and scale > 0):
            raise FormatError(f"{self.source}: layer {layer} {name} has scale {scale}; expected a positive finite number"
                              if not grouped else f"{self.source}: layer {layer} {name} has non-finite group scales")
        if name in ("q", "k"):
            c = self.config
            order = rope_pair_order(c.heads if name == "q" else c.kv_heads, c.head_dim)
            ternary, scale = ternary[order], (scale[order] if grouped else scale)
        self.set_linear(layer, name, TernaryWeights.pack(ternary, scale, "i2" if grouped else kernel))

    def set_linear(self, layer: int, name: str, w: TernaryWeights) -> None:
        """Stores packed weights as they are (q and k rows already in the engine's order)."""
        p = f"layers.{layer}.{name}."
        self._t[p + "scale"] = np.array([w.scale], dtype=np.float32)
        if w.kernel == "tlmm":
            self._t[p + "tiles"], self._t[p + "neg_count"] = w.data, w.neg_count
        else:
            self._t[p + "codes"] = w.data
        if w.group_scale is not None:
            self._t[p + "group_scale"] = w.group_scale

    def set_norm(self, layer: int, name: str, gamma) -> None:
        self._t[f"layers.{layer}.{name}"] = self._finite(gamma, f"layer {layer} {name}")

    def set_final_norm(self, gamma) -> None:
        self._t["final_norm"] = self._finite(gamma, "final_norm")

    def _finite(self, a, what: str) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise FormatError(f"{self.source}: {what} holds NaN or infinite values")
        return a

    def set_rows(self, table: str, values, head: str = DEFAULT_HEAD) -> None:
        """table: "embedding" or "lm_head"; values: float [vocab, hidden], or Rows as they are."""
        if not isinstance(values, Rows):
            values = self._finite(values, table)
        if isinstance(values, Rows):
            rows = values
        else:
            try:
                rows = Rows(f32=values) if head == "fp32" else QUANTIZE_ROWS[head](values)
            except KeyError:
                raise UsageError(f"unknown head type {head!r}; expected one of {', '.join(HEADS)}") from None
        for key in ("q", "row_scale", "f32", "q6"):
            if getattr(rows, key) is not None:
                self._t[f"{table}.{key}"] = getattr(rows, key)

    # ---- reading ----
    def _get(self, name: str) -> np.ndarray:
        try:
            return self._t[name]
        except KeyError:
            raise FormatError(f"{self.source}: tensor {name!r} is missing from the model") from None

    def linear(self, layer: int, name: str) -> TernaryWeights:
        """Linear `name` of `layer` as stored (q and k rows in the engine's RoPE-pair order)."""
        p = f"layers.{layer}.{name}."
        out_f, in_f = self.config.linear_shape(name)
        scale = float(self._get(p + "scale")[0])
        if p + "tiles" in self._t:
            return TernaryWeights("tlmm", out_f, in_f, scale, self._t[p + "tiles"], self._get(p + "neg_count"))
        return TernaryWeights("i2", out_f, in_f, scale, self._get(p + "codes"), None, self._t.get(p + "group_scale"))

    def norm(self, layer: int, name: str) -> np.ndarray | None:
        """Norm `name` of `layer`, or None when absent (which norms are required is the engine's
        check: the sub-norms exactly when config.sub_norms)."""
        return self._t.get(f"layers.{layer}.{name}")

    @property
    def final_norm(self) -> np.ndarray:
        return self._get("final_norm")

    def rows(self, table: str) -> Rows:
        """The embedding or LM head ("lm_head" of a tied model is the embedding)."""
        if table == "lm_head" and self.config.tied_embeddings:
            table = "embedding"
        if f"{table}.f32" in self._t:
            return Rows(f32=self._t[f"{table}.f32"])
        if f"{table}.q6" in self._t:
            return Rows(q6=self._t[f"{table}.q6"], row_scale=self._get(f"{table}.row_scale"), hidden=self.config.hidden)
        return Rows(q=self._get(f"{table}.q"), row_scale=self._get(f"{table}.row_scale"))

    @property
    def head(self) -> str:
        """"int8", "int6" or "fp32": how the embedding and LM head are stored."""
        return "fp32" if "embedding.f32" in self._t else "int6" if "embedding.q6" in self._t else "int8"

    def arrays(self) -> Mapping[str, np.ndarray]:
        """The stored arrays by name, read-only (to compare two packed models byte for byte)."""
        return MappingProxyType(self._t)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._t.values())

    def decode_step_bytes(self) -> int:
        """Weights a decode step reads: every ternary linear and the LM head (the one embedding
        row it also reads is too small to count)."""
        linears = sum(self.linear(i, n).nbytes for i in range(self.config.layers) for n in LINEAR_NAMES)
        head = self.rows("lm_head")
        return linears + (head.f32.nbytes if head.f32 is not None else head.stored.nbytes + head.row_scale.nbytes)

    # ---- the converted file ----
    def save(self, path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> None:
        """Writes the converted file: metadata `tellme.format`, `tellme.config` (ModelConfig JSON),
        `tellme.tokenizer` and `tellme.tokenizer_config` (optional)."""
        meta = {"tellme.format": FORMAT_VERSION, "tellme.config": self.config.to_json()}
        if tokenizer is not None:
            meta["tellme.tokenizer"] = tokenizer.json
            meta["tellme.tokenizer_config"] = json.dumps(tokenizer.config)
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")  # never leave a half-written model under the real name
        try:
            write_safetensors(tmp, self._t, meta)
            os.replace(tmp, path)
        except OSError as e:
            raise OSError(f"{path}: cannot write ({e.strerror or e})") from None
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def open(cls, path: Path) -> tuple["PackedModel", Tokenizer | None]:
        """A converted file as memory-mapped views, and its tokenizer."""
        f = SafetensorsFile(path)
        version = f.metadata.get("tellme.format")
        if version != FORMAT_VERSION:
            raise FormatError(f"{path}: tellme file format {version!r}, this version reads {FORMAT_VERSION!r}; "
                              "convert the checkpoint again")
        try:
            config = ModelConfig.from_json(f.metadata["tellme.config"], f"{path} (tellme.config)")
        except KeyError:
            raise FormatError(f"{path}: the tellme.config metadata is missing") from None
        tokenizer = None
        if "tellme.tokenizer" in f.metadata:
            tokenizer = Tokenizer(f.metadata["tellme.tokenizer"],
                                  json.loads(f.metadata.get("tellme.tokenizer_config", "{}")), str(path))
        packed = cls(config, {name: f.raw(name) for name in f.names}, str(path))
        packed.validate()
        packed.load_paths = {"linear": {"mapped (converted file)": config.layers * len(LINEAR_NAMES)},
                             "embedding": {f"{packed.head}, mapped (converted file)": 1}}
        return packed, tokenizer

    def validate(self) -> None:
        """Every tensor of a file as strict as packing makes them: names, dtypes and shapes; scales
        and values finite (scales > 0); ternary codes in range and neg_count what the tiles say.
        FormatError names the first tensor that is not."""
        c, expected = self.config, {}
        for i in range(c.layers):
            for name in LINEAR_NAMES:
                out_f, in_f = c.linear_shape(name)
                p, rows = f"layers.{i}.{name}.", round_up(out_f, layout.ROW_BLOCK)
                expected[p + "scale"] = (np.float32, (1,))
                if p + "tiles" in self._t:
                    expected[p + "tiles"] = (np.uint8, (rows // layout.ROW_BLOCK, round_up(in_f, layout.KB_WEIGHTS)
                                                        // layout.KB_WEIGHTS, layout.TILE_BYTES))
                    expected[p + "neg_count"] = (np.int32, (rows,))
                else:
                    expected[p + "codes"] = (np.uint8, (rows, round_up(in_f, layout.I2_K_PAD) // 4))
                gs = self._t.get(p + "group_scale")
                if gs is not None:  # groups of a multiple of 32 weights that divide the row
                    groups = gs.shape[1] if gs.ndim == 2 and gs.shape[1] and in_f % gs.shape[1] == 0 \
                        and (in_f // gs.shape[1]) % 32 == 0 else 0
                    expected[p + "group_scale"] = (np.float32, (rows, groups or -1))
            for name in NORM_NAMES:
                if f"layers.{i}.{name}" in self._t:
                    expected[f"layers.{i}.{name}"] = (np.float32, (c.norm_dim(name),))
        for table in ("embedding",) if c.tied_embeddings else ("embedding", "lm_head"):
            if f"{table}.f32" in self._t:
                expected[f"{table}.f32"] = (np.float32, (c.vocab, c.hidden))
            elif f"{table}.q6" in self._t:
                expected[f"{table}.q6"] = (np.uint8, (c.vocab, layout.int6_row_bytes(c.hidden)))
                expected[f"{table}.row_scale"] = (np.float32, (c.vocab,))
            else:
                expected[f"{table}.q"] = (np.int8, (c.vocab, c.hidden))
                expected[f"{table}.row_scale"] = (np.float32, (c.vocab,))
        expected["final_norm"] = (np.float32, (c.hidden,))
        unknown = sorted(set(self._t) - set(expected))
        if unknown:
            raise FormatError(f"{self.source}: unexpected tensor {unknown[0]!r} for this configuration")
        for name, (dtype, shape) in expected.items():
            a = self._get(name)
            if a.dtype != dtype or a.shape != shape:
                raise FormatError(f"{self.source}: tensor {name!r} is {a.dtype} {list(a.shape)}, expected "
                                  f"{np.dtype(dtype)} {list(shape)}")
            if dtype == np.float32 and not np.isfinite(a).all():
                raise FormatError(f"{self.source}: tensor {name!r} holds NaN or infinite values")
            if name.endswith("scale") and not name.endswith("group_scale") and not (a > 0).all():
                raise FormatError(f"{self.source}: tensor {name!r} holds a scale <= 0")
            if name.endswith(".codes") and _core.has_code_3(a):
                raise FormatError(f"{self.source}: tensor {name!r} holds the unused 2-bit code 3")
            if name.endswith(".tiles"):
                problem = layout.check_tlmm_tiles(a, self._t[name[:-len("tiles")] + "neg_count"])
                if problem:
                    raise FormatError(f"{self.source}: tensor {name!r} {problem}")

    @staticmethod
    def is_converted_file(path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            return "tellme.format" in SafetensorsFile(path).metadata
        except FormatError:
            return False
