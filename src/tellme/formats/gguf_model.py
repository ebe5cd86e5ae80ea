"""A ternary model in a GGUF file (llama.cpp, bitnet.cpp), read through the same interface as
formats.hf.HFCheckpoint: `config`, `linear(i, name)` -> (ternary int8 [out, in], scale), `norm`,
`embedding`, `lm_head`, `final_norm`, and `tokenizer`.

| general.architecture       | what it is                         | sub-norms | FFN act | tellme config     |
|----------------------------|------------------------------------|-----------|---------|-------------------|
| `bitnet`                   | llama.cpp's BitNet (1bitLLM)       | yes       | silu    | `bitnet-1bitllm`  |
| `bitnet-b1.58`, `bitnet-25`| bitnet.cpp's BitNet b1.58 2B-4T    | yes       | relu2   | `bitnet-2b4t`     |
| `llama`                    | Llama3-8B-1.58, Falcon3 1.58-bit   | no        | silu    | `llama-bitnet`    |
| `qwen3`                    | Ternary Bonsai (Q2_0, Q1_0)        | no (q/k norms) | silu | `qwen3`      |

`{arch}.hidden_activation` (llama.cpp's key; Hugging Face's `hidden_act` values), when present,
overrides the activation the architecture implies: a 2B-4T file labelled `bitnet` runs ReLU^2.

Tensor names are llama.cpp's (`blk.{i}.attn_q.weight`, ...). Linears may be TQ1_0, TQ2_0, I2_S,
Q2_0 or Q1_0 (a scale per block of 64 or 128 weights: group scales, or one scale where every block
carries the same), or F32/F16/BF16 holding ternary values times one scale or one scale per group
(formats/gguf_quants.py: ternary_from_values); an optional `blk.{i}.attn_q.scale`
multiplies in, as in llama.cpp's bitnet graph. llama.cpp stores the `llama` architecture's q and
k rows with RoPE pairs adjacent; they are put back in Hugging Face order here.
"""

from __future__ import annotations

import math
import os

import numpy as np
from gguf import GGMLQuantizationType

from .. import _core
from ..config import ModelConfig
from ..errors import ConfigError, FormatError
from ..kernels import TernaryWeights
from ..kernels.layout import I2_K_PAD, ROW_BLOCK, pack_i2
from ..rope import rope_pair_order
from .gguf_file import GGUFFile
from .gguf_quants import I2_S, Q1_0, Q2_0, dequantize, ternary_from_values, tq1_0_to_i2, tq2_0_to_i2, unpack_grouped, unpack_i2s

TQ2_0, F16 = int(GGMLQuantizationType.TQ2_0), int(GGMLQuantizationType.F16)
BF16, TQ1_0 = int(GGMLQuantizationType.BF16), int(GGMLQuantizationType.TQ1_0)

ARCHITECTURES = {  # general.architecture -> (tellme architecture, activation)
    "bitnet": ("bitnet-1bitllm", "silu"),
    "bitnet-b1.58": ("bitnet-2b4t", "relu2"),
    "bitnet-25": ("bitnet-2b4t", "relu2"),
    "llama": ("llama-bitnet", "silu"),
    "qwen3": ("qwen3", "silu"),
}
QK_NORM_TENSORS = {"q_norm": "attn_q_norm", "k_norm": "attn_k_norm"}
LINEAR_TENSORS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                  "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
ROPE_FREQS = "rope_freqs.weight"
PADDED_FROM_KEY = "tellme.feed_forward_length_unpadded"  # written when the FFN was zero-padded
HIDDEN_ACTIVATIONS = {"silu": "silu", "swish": "silu", "relu2": "relu2"}  # hidden_activation -> tellme's


def config_from_gguf(f: GGUFFile) -> ModelConfig:
    arch = f.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise FormatError(f"{f.path}: unsupported architecture {arch!r}; tellme reads "
                          f"{', '.join(ARCHITECTURES)} with ternary weights")
    architecture, activation = ARCHITECTURES[arch]
    act = f.get(f"{arch}.hidden_activation", None)
    if act is not None:
        if act not in HIDDEN_ACTIVATIONS:
            raise FormatError(f"{f.path}: metadata {arch}.hidden_activation = {act!r} is not supported "
                              f"(tellme runs {', '.join(HIDDEN_ACTIVATIONS)})")
        activation = HIDDEN_ACTIVATIONS[act]

    def need(key: str, default=None, kind=int):
        value = f.get(f"{arch}.{key}", default)
        if value is None:
            raise FormatError(f"{f.path}: metadata {arch}.{key} is missing")
        if isinstance(value, list):  # per-layer values: fine when all equal
            if not value or len(set(value)) != 1:
                raise FormatError(f"{f.path}: {arch}.{key} differs between layers ({value[:4]}...), not supported")
            value = value[0]
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or value <= 0 or (kind is int and not isinstance(value, int))):
            raise ConfigError(f"{f.path}: metadata {arch}.{key} = {value!r} is not a positive "
                              f"{'integer' if kind is int else 'number'}")
        return kind(value)

    hidden, heads = need("embedding_length"), need("attention.head_count")
    head_dim = need("attention.key_length", hidden // heads)
    rot = need("rope.dimension_count", head_dim)
    if rot != head_dim:
        raise FormatError(f"{f.path}: RoPE over {rot} of {head_dim} head dimensions (partial rotary) is not supported")
    scaling = f.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", "linear", "yarn") or (
            scaling == "linear" and f.get(f"{arch}.rope.scaling.factor", 1.0) != 1.0):
        raise FormatError(f"{f.path}: RoPE scaling {scaling!r} is not supported")
    rope_scaling = None
    if scaling == "yarn":
        rope_scaling = {"rope_type": "yarn", "factor": need("rope.scaling.factor", kind=float),
                        "original_max_position_embeddings": need("rope.scaling.original_context_length")}
        for key, name in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow"),
                          ("attention_factor", "attn_factor")):
            if f.get(f"{arch}.rope.scaling.{name}") is not None:
                rope_scaling[key] = need(f"rope.scaling.{name}", kind=float)
    if ROPE_FREQS in f.tensors:  # llama3-style: one divisor per frequency
        factors = dequantize(f.raw(ROPE_FREQS), f.tensors[ROPE_FREQS].type, f.tensors[ROPE_FREQS].shape).reshape(-1)
        rope_scaling = {"rope_type": "factors", "factors": [float(x) for x in factors]}
    if "token_embd.weight" not in f.tensors:
        raise FormatError(f"{f.path}: tensor 'token_embd.weight' is missing")
    vocab = f.tensors["token_embd.weight"].shape[0]
    eos = [f.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")]
    return ModelConfig(
        architecture=architecture,
        hidden=hidden,
        intermediate=need("feed_forward_length"),
        layers=need("block_count"),
        heads=heads,
        kv_heads=need("attention.head_count_kv", heads),
        head_dim=head_dim,
        vocab=vocab,
        context=need("context_length"),
        eps=need("attention.layer_norm_rms_epsilon", kind=float),
        activation=activation,
        sub_norms=architecture.startswith("bitnet"),
        qk_norm=architecture == "qwen3",
        tied_embeddings="output.weight" not in f.tensors,
        rope_theta=need("rope.freq_base", 10000.0, float),
        rope_scaling=rope_scaling,
        eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos if isinstance(e, int))),
        bos_token_id=f.get("tokenizer.ggml.bos_token_id"),
        ffn_padded_from=f.get(PADDED_FROM_KEY),
        source=str(f.path),
    )


class GGUFCheckpoint:
    def __init__(self, path: str | os.PathLike):
        from .gguf_tokenizer import tokenizer_from_gguf

        self.file = GGUFFile(path)
        self.path = self.file.path
        self.config = config_from_gguf(self.file)
        self.arch = self.file.get("general.architecture")
        self.tokenizer = tokenizer_from_gguf(self.file.metadata, str(self.path))
        if self.tokenizer is not None and self.tokenizer.vocab_size > self.config.vocab:
            raise FormatError(f"{self.path}: the tokenizer has {self.tokenizer.vocab_size} tokens, the embedding only "
                              f"{self.config.vocab} rows")

    def _info(self, name: str, shape: tuple[int, ...]):
        t = self.file.tensors.get(name)
        if t is None:
            raise FormatError(f"{self.path}: tensor {name!r} is missing")
        if t.shape != shape:
            raise FormatError(f"{self.path}: tensor {name!r} has shape {list(t.shape)}, the metadata needs {list(shape)}")
        return t

    def _float(self, name: str, shape: tuple[int, ...], start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 values of tensor `name` (its rows [start, stop) when stop is given)."""
        t = self._info(name, shape)
        raw = self.file.raw(name) if stop is None else self.file.read(name, start, stop - start)
        try:
            return dequantize(raw, t.type, shape if stop is None else (stop - start, *shape[1:]))
        except (ValueError, NotImplementedError) as e:
            raise FormatError(f"{self.path}: tensor {name!r} ({t.type_name}) cannot be read: {e}") from None

    def embedding(self) -> np.ndarray:
        c = self.config
        return self._float("token_embd.weight", (c.vocab, c.hidden))

    def table_rows(self, table: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of "embedding" or "lm_head", read from the file for just those rows
        (loading streams a [vocab, hidden] table through bounded memory): float32, or for an F16
        table its bits as uint16 (the native quantizer widens them)."""
        c = self.config
        t = self._info("token_embd.weight" if table == "embedding" else "output.weight", (c.vocab, c.hidden))
        if t.type == F16:
            return self.file.read(t.name, start, stop - start).view(np.uint16).reshape(stop - start, c.hidden)
        if t.type == BF16:  # widened natively: gguf's NumPy dequantize took 2 s of a 2B-4T table
            return _core.bf16_to_float(self.file.read(t.name, start, stop - start).view(np.uint16).reshape(stop - start, c.hidden))
        return self._float(t.name, (c.vocab, c.hidden), start, stop)

    def lm_head(self) -> np.ndarray | None:
        """None when the head is tied to the embedding (no output.weight, as llama.cpp reads it)."""
        if self.config.tied_embeddings:
            return None
        return self._float("output.weight", (self.config.vocab, self.config.hidden))

    def final_norm(self) -> np.ndarray:
        return self._float("output_norm.weight", (self.config.hidden,))

    def norm(self, layer: int, name: str) -> np.ndarray | None:
        c = self.config
        if (name.endswith("sub_norm") and not c.sub_norms) or (name in QK_NORM_TENSORS and not c.qk_norm):
            return None
        return self._float(f"blk.{layer}.{QK_NORM_TENSORS.get(name, name)}.weight", (c.norm_dim(name),))

    def packed_linear(self, layer: int, name: str) -> tuple[TernaryWeights, str] | None:
        """Linear `name` of `layer` straight in the i2 layout (q and k rows in the engine's RoPE-pair
        order), and how: I2_S rows are the i2 layout, so such a tensor is used where it lies in the
        memory map; TQ2_0 codes only change bit order; other types (TQ1_0, dense values) are
        unpacked a block of rows at a time. None where the shape needs padding (then `linear`
        unpacks the whole tensor)."""
        c = self.config
        out_f, in_f = shape = c.linear_shape(name)
        base = f"blk.{layer}.{LINEAR_TENSORS[name]}"
        t = self._info(base + ".weight", shape)
        if out_f % ROW_BLOCK or in_f % I2_K_PAD or t.type in (Q1_0, Q2_0):  # grouped: `linear`
            return None
        n = out_f * in_f
        try:
            if t.type == I2_S:
                raw = self.file.raw(t.name)
                codes, scale = raw[: n // 4].reshape(out_f, in_f // 4), float(raw[n // 4: n // 4 + 4].view(np.float32)[0])
                if _core.has_code_3(codes):
                    raise ValueError("holds the unused 2-bit code 3")
                how = "in place (I2_S, memory-mapped)"
            else:
                codes, scale = self._rows_to_i2(t, shape)
                how = {TQ2_0: "repacked (TQ2_0 bit order)", TQ1_0: "decoded (TQ1_0 trits to codes)"}.get(
                    t.type, f"unpacked and packed in row blocks ({t.type_name})")
        except ValueError as e:
            if t.type not in (I2_S, TQ2_0):  # dense values may hold group scales: `linear` reads those
                return None
            raise FormatError(f"{self.path}: tensor {t.name!r} ({t.type_name}) {e}; tellme runs ternary "
                              "(BitNet b1.58) weights") from None
        if base + ".scale" in self.file.tensors:  # llama.cpp's bitnet: y = (W x) * scale
            scale = float(np.float32(scale) * self._float(base + ".scale", (1,)).reshape(-1)[0])
        if not (np.isfinite(scale) and scale > 0):
            raise FormatError(f"{self.path}: tensor {t.name!r} has scale {scale}; expected a positive finite number")
        if name in ("q", "k") and self.arch != "llama":  # Hugging Face row order in the file
            codes = codes[rope_pair_order(c.heads if name == "q" else c.kv_heads, c.head_dim)]
            how = "copied, rows reordered (I2_S)" if t.type == I2_S else how + ", rows reordered"
        return TernaryWeights("i2", out_f, in_f, scale, codes, None), how

    def _rows_to_i2(self, t, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
        """i2 codes of a TQ2_0 or TQ1_0 tensor (decoded natively) or of any other type (unpacked), 1 M weights
        at a time into the one output array (a block's rows are whole blocks of the type, as the
        table check ensured); one scale for all blocks. TQ1_0 and TQ2_0 go 8 M weights at a time
        (their decoders are native: smaller steps were Python's time)."""
        out_f, in_f = shape
        weights = 1 << 23 if t.type in (TQ1_0, TQ2_0) else 1 << 20
        step = max(ROW_BLOCK, weights // in_f // ROW_BLOCK * ROW_BLOCK)
        codes, scale = np.empty((out_f, in_f // 4), np.uint8), 0.0
        for r0 in range(0, out_f, step):
            n = min(step, out_f - r0)
            raw = self.file.read(t.name, r0, n)
            if t.type in (TQ1_0, TQ2_0):  # decoded straight into the rows
                s = (tq1_0_to_i2 if t.type == TQ1_0 else tq2_0_to_i2)(raw, (n, in_f), codes[r0:r0 + n])[1]
            else:
                ternary, s = ternary_from_values(dequantize(raw, t.type, (n, in_f)))
                codes[r0:r0 + n] = pack_i2(ternary)
            if s and scale and s != scale:
                raise ValueError(f"is not ternary with one scale per tensor (rows {r0}-{r0 + n} have {s:g}, "
                                 f"earlier rows {scale:g})")
            scale = scale or s
        return codes, scale

    def linear(self, layer: int, name: str) -> tuple[np.ndarray, float]:
        c = self.config
        shape = c.linear_shape(name)
        base = f"blk.{layer}.{LINEAR_TENSORS[name]}"
        t = self._info(base + ".weight", shape)
        try:
            if t.type == I2_S:
                ternary, scale = unpack_i2s(self.file.raw(t.name), shape)
            elif t.type in (Q1_0, Q2_0):
                ternary, scale = unpack_grouped(self.file.raw(t.name), t.type, shape)
                live = ternary.reshape(*scale.shape, -1).any(axis=2)  # blocks of zeros may carry any d
                one = np.unique(scale[live])
                if one.size == 1 and one[0] > 0:  # one scale after all: the per-tensor fast path
                    scale = float(one[0])
            else:
                ternary, scale = ternary_from_values(dequantize(self.file.raw(t.name), t.type, shape), groups=True)
        except (ValueError, NotImplementedError) as e:
            raise FormatError(f"{self.path}: tensor {t.name!r} ({t.type_name}) {e}; tellme runs ternary "
                              "(BitNet b1.58) weights") from None
        if base + ".scale" in self.file.tensors:  # llama.cpp's bitnet: y = (W x) * scale
            extra = np.float32(self._float(base + ".scale", (1,)).reshape(-1)[0])
            scale = float(np.float32(scale) * extra) if np.ndim(scale) == 0 else scale * extra
        if not np.isfinite(scale).all():
            raise FormatError(f"{self.path}: tensor {t.name!r} has a non-finite scale")
        if self.arch == "llama" and name in ("q", "k"):  # llama.cpp's RoPE-pair row order -> HF order
            heads = c.heads if name == "q" else c.kv_heads
            back = np.argsort(rope_pair_order(heads, c.head_dim))
            ternary, scale = ternary[back], (scale[back] if np.ndim(scale) else scale)
        return ternary, scale
