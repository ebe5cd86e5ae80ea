"""Hugging Face checkpoint directories: config.json + safetensors (sharded or not) + tokenizer.

Reads each linear as (ternary int8 [out, in], scale) with W = scale * T, whatever the stored
form: transformers' packed BitLinear (uint8 [out/4, in], row p + i*out/4 in bits 2i..2i+1,
code = w + 1), unpacked ternary values, or float masters quantized with absmean at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.config import ModelConfig
from .safetensors import FormatError, TensorStore

LINEARS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
SUB_NORMS = {  # per architecture
    "bitnet": {"attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"},
    "bitnet-1bitllm": {"attn_sub_norm": "self_attn.inner_attn_ln", "ffn_sub_norm": "mlp.ffn_layernorm"},
    "llama-bitnet": {},
}


def unpack_bitlinear(packed: np.ndarray, out_features: int) -> np.ndarray:
    """transformers' packed BitLinear weight uint8 [ceil(out/4), in] -> ternary int8 [out, in]."""
    parts = [((packed >> (2 * i)) & 3).astype(np.int8) - 1 for i in range(4)]
    return np.concatenate(parts, axis=0)[:out_features]


def absmean_ternary_like_torch(w: np.ndarray) -> tuple[np.ndarray, float]:
    """BitNet b1.58 weight quantization as the reference computes it: s = 1 / max(mean|w|, 1e-5),
    T = clip(round(w * s), -1, 1), W = T / s."""
    inv = np.float32(1.0) / np.float32(max(float(np.abs(w, dtype=np.float32).mean(dtype=np.float64)), 1e-5))
    t = np.clip(np.rint(w * inv), -1, 1).astype(np.int8)
    return t, float(np.float32(1.0) / inv)


class HFCheckpoint:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: not a directory")
        self.config = ModelConfig.from_hf(self.path)
        self.store = TensorStore(self.path)
        self._sub = SUB_NORMS[self.config.architecture]

    def _float(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        f = self.store.file(name)
        if f.shape(name) != shape:
            raise FormatError(f"{f.path}: tensor {name!r} has shape {f.shape(name)}, the config needs {shape}")
        return f.float32(name)

    def embedding(self) -> np.ndarray:
        return self._float("model.embed_tokens.weight", (self.config.vocab, self.config.hidden))

    def lm_head(self) -> np.ndarray | None:
        """None when the head is tied to the embedding."""
        if "lm_head.weight" not in self.store:
            return None
        return self._float("lm_head.weight", (self.config.vocab, self.config.hidden))

    def final_norm(self) -> np.ndarray:
        return self._float("model.norm.weight", (self.config.hidden,))

    def norm(self, layer: int, name: str) -> np.ndarray | None:
        c = self.config
        module = NORMS.get(name) or self._sub.get(name)
        if module is None:
            return None
        return self._float(f"model.layers.{layer}.{module}.weight", (c.norm_dim(name),))

    def linear(self, layer: int, name: str) -> tuple[np.ndarray, float]:
        c = self.config
        out_f, in_f = c.linear_shape(name)
        module = f"model.layers.{layer}.{LINEARS[name]}"
        if any(module == m or module.endswith("." + m) for m in c.not_converted):
            raise FormatError(f"{self.path}: {module} is kept in full precision (modules_to_not_convert); "
                              "tellme needs every decoder linear ternary")
        wname = module + ".weight"
        f = self.store.file(wname)
        shape, dtype = f.shape(wname), f.dtype(wname)
        if dtype == "U8":
            if shape != ((out_f + 3) // 4, in_f):
                raise FormatError(f"{f.path}: packed tensor {wname!r} has shape {shape}, "
                                  f"expected {((out_f + 3) // 4, in_f)} for a {out_f}x{in_f} linear")
            t = unpack_bitlinear(f.raw(wname), out_f)
            if (t > 1).any():
                raise FormatError(f"{f.path}: tensor {wname!r} holds the unused 2-bit code 3")
            return t, self._stored_scale(module, wname)
        if shape != (out_f, in_f):
            raise FormatError(f"{f.path}: tensor {wname!r} has shape {shape}, expected {(out_f, in_f)}")
        w = f.float32(wname)
        if c.linear_class == "online":
            return absmean_ternary_like_torch(w)
        if not np.isin(w, (-1.0, 0.0, 1.0)).all():
            raise FormatError(f"{f.path}: tensor {wname!r} should hold ternary values for linear_class "
                              f"{c.linear_class!r}")
        return w.astype(np.int8), self._stored_scale(module, wname)

    def _stored_scale(self, module: str, wname: str) -> float:
        name = module + ".weight_scale"
        if name not in self.store:
            raise FormatError(f"{self.path}: {wname!r} is quantized but {name!r} is missing")
        s = self.store.file(name).float32(name).reshape(-1)
        if s.size != 1 or not np.isfinite(s[0]) or s[0] == 0:
            raise FormatError(f"{self.path}: {name!r} must be one finite non-zero value, got {s[:4]}")
        # BitLinear divides by weight_scale; AutoBitLinear multiplies by it
        return float(np.float32(1.0) / s[0]) if self.config.linear_class == "bitlinear" else float(s[0])
