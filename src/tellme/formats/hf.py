"""Hugging Face checkpoint directories: config.json + safetensors (sharded or not) + tokenizer.

| config.json                                   | tellme architecture | linears                              |
|-----------------------------------------------|---------------------|--------------------------------------|
| model_type `bitnet` (BitNet b1.58 2B-4T)      | `bitnet-2b4t`       | packed 2-bit + weight_scale, or bf16 |
| architectures `BitnetForCausalLM` (1bitLLM)   | `bitnet-1bitllm`    | fp16 masters, absmean at load        |
| model_type `llama` + quant_method `bitnet`    | `llama-bitnet`      | packed 2-bit + weight_scale          |

Reads each linear as (ternary int8 [out, in], scale) with W = scale * T, whatever the stored
form: transformers' packed BitLinear (uint8 [out/4, in], row p + i*out/4 in bits 2i..2i+1,
code = w + 1), unpacked ternary values, or float masters quantized with absmean at load. A Qwen3
directory holds float values that are already ternary times one scale per group of weights along
a row (Bonsai's "unpacked" checkpoints): the scales are read off the values, exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import ConfigError, FormatError
from ..tokenizer import Tokenizer
from .gguf_quants import ternary_from_values
from .safetensors import TensorStore

LINEARS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
SUB_NORMS = {  # per architecture
    "bitnet-2b4t": {"attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"},
    "bitnet-1bitllm": {"attn_sub_norm": "self_attn.inner_attn_ln", "ffn_sub_norm": "mlp.ffn_layernorm"},
    "llama-bitnet": {},
    "qwen3": {},
}
QK_NORMS = {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}  # Qwen3


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


def read_config(path: Path) -> tuple[ModelConfig, str, tuple[str, ...]]:
    """(config, linear_class, modules_to_not_convert) from config.json and generation_config.json.

    linear_class says how ternary linears are stored: "bitlinear" (packed, W = T / weight_scale),
    "autobitlinear" (packed or unpacked, W = T * weight_scale), "online" (float masters, absmean),
    "values" (float values that are ternary times a scale per tensor or group: Qwen3)."""
    file = path / "config.json"
    c = _read_json(file, f"{path}: no config.json (expected a Hugging Face model directory)")
    gen_file = path / "generation_config.json"
    gen = _read_json(gen_file) if gen_file.exists() else {}

    def get(d, key, types, default=None, where=""):
        """d[key] if it has one of `types` (a JSON number may be written as 2048.0), else ConfigError."""
        v = d.get(key, default)
        if int in types and isinstance(v, float) and v.is_integer():
            v = int(v)
        ok = (v is None and None in types) or (
            isinstance(v, tuple(t for t in types if t is not None)) and isinstance(v, bool) == (bool in types))
        if not ok:
            if v is None and key not in d:
                raise ConfigError(f"{file}: missing {where}{key!r}")
            raise ConfigError(f"{file}: {where}{key} = {v!r} is not a valid value")
        return v

    archs = get(c, "architectures", (list, None)) or []
    model_type = get(c, "model_type", (str, None))
    quant = get(c, "quantization_config", (dict, None)) or {}
    if model_type == "bitnet":
        arch = "bitnet-2b4t"
    elif "BitnetForCausalLM" in archs:
        arch = "bitnet-1bitllm"
    elif model_type == "llama" and quant.get("quant_method") == "bitnet":
        arch = "llama-bitnet"
    elif model_type == "qwen3":
        arch = "qwen3"
    else:
        raise ConfigError(f"{file}: unsupported architecture (model_type={model_type!r}, "
                          f"architectures={archs}); tellme runs model_type 'bitnet', "
                          "'BitnetForCausalLM', 'llama' with quantization_config.quant_method 'bitnet', "
                          "and 'qwen3' with ternary weights (Ternary Bonsai)")
    if quant and quant.get("quant_method") not in (None, "bitnet"):
        raise ConfigError(f"{file}: quantization method {quant.get('quant_method')!r} is not ternary")
    if quant.get("use_rms_norm"):
        raise ConfigError(f"{file}: quantization_config.use_rms_norm (an RMSNorm inside every linear) "
                          "is not supported")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise ConfigError(f"{file}: linear biases are not supported")
    if c.get("use_sliding_window"):
        raise ConfigError(f"{file}: sliding-window attention (use_sliding_window) is not supported")

    hidden, heads = get(c, "hidden_size", (int,)), get(c, "num_attention_heads", (int,))
    if heads < 1:
        raise ConfigError(f"{file}: num_attention_heads = {heads} must be positive")
    # transformers' defaults: BitNetConfig's hidden_act is relu2, LlamaConfig's silu
    act = get(c, "hidden_act", (str,), "relu2" if arch == "bitnet-2b4t" else "silu")
    activation = {"silu": "silu", "swish": "silu", "relu2": "relu2"}.get(act)
    if activation is None:
        raise ConfigError(f"{file}: unsupported hidden_act {act!r} (expected silu or relu2)")
    rope = get(c, "rope_parameters", (dict, None)) or get(c, "rope_scaling", (dict, None)) or {}
    theta = get(c, "rope_theta", (int, float), get(rope, "rope_theta", (int, float), 10000.0, "rope "))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3", "yarn"):
        raise ConfigError(f"{file}: unsupported RoPE type {rope_type!r} (expected default, llama3 or yarn)")
    if quant:
        linear_class = get(quant, "linear_class", (str,), "bitlinear", "quantization_config.")
        if linear_class == "autobitlinear" and quant.get("quantization_mode", "offline") == "online":
            linear_class = "online"
        if linear_class not in ("bitlinear", "autobitlinear", "online"):
            raise ConfigError(f"{file}: unknown quantization_config.linear_class {linear_class!r}")
    else:
        linear_class = "values" if arch == "qwen3" else "online"
    not_converted = get(quant, "modules_to_not_convert", (list, None), None, "quantization_config.") or []
    if not all(isinstance(m, str) for m in not_converted):
        raise ConfigError(f"{file}: quantization_config.modules_to_not_convert must be a list of module names")
    eos = get(c, "eos_token_id", (int, list, None))
    eos = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    stops = get(gen, "stop_strings", (str, list, None)) or ()
    stops = (stops,) if isinstance(stops, str) else tuple(stops)
    config = ModelConfig(
        architecture=arch,
        hidden=hidden,
        intermediate=get(c, "intermediate_size", (int,)),
        layers=get(c, "num_hidden_layers", (int,)),
        heads=heads,
        kv_heads=get(c, "num_key_value_heads", (int, None)) or heads,
        head_dim=get(c, "head_dim", (int, None)) or hidden // heads,
        vocab=get(c, "vocab_size", (int,)),
        context=get(c, "max_position_embeddings", (int,), 2048),
        eps=float(get(c, "rms_norm_eps", (int, float), 1e-6)),
        activation=activation,
        sub_norms=arch.startswith("bitnet"),
        qk_norm=arch == "qwen3",
        tied_embeddings=get(c, "tie_word_embeddings", (bool,), arch == "bitnet-2b4t"),
        rope_theta=float(theta),
        rope_scaling={**rope, "rope_type": rope_type} if rope_type != "default" else None,
        eos_token_ids=eos,
        bos_token_id=get(c, "bos_token_id", (int, None)),
        stop_strings=stops,
        source=str(file),
    )
    return config, linear_class, tuple(not_converted)


def _read_json(file: Path, missing: str = "") -> dict:
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(missing or f"{file}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{file}: invalid JSON ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise FormatError(f"{file}: cannot read ({e.strerror})") from None
    if not isinstance(d, dict):
        raise FormatError(f"{file}: expected a JSON object")
    return d


class HFCheckpoint:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: not a directory")
        self.config, self.linear_class, self.not_converted = read_config(self.path)
        self.tokenizer = Tokenizer.from_dir(self.path)  # None without tokenizer.json
        self.store = TensorStore(self.path)
        self._sub = SUB_NORMS[self.config.architecture]

    def _float(self, name: str, shape: tuple[int, ...], start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 values of tensor `name` (its rows [start, stop) when stop is given)."""
        f = self.store.file(name)
        if f.shape(name) != shape:
            raise FormatError(f"{f.path}: tensor {name!r} has shape {f.shape(name)}, the config needs {shape}")
        return f.float32(name, start, None if stop is None else stop - start)

    def embedding(self) -> np.ndarray:
        return self._float("model.embed_tokens.weight", (self.config.vocab, self.config.hidden))

    def table_rows(self, table: str, start: int, stop: int) -> np.ndarray:
        """float32 rows [start, stop) of "embedding" or "lm_head" (loading streams the table)."""
        name = "model.embed_tokens.weight" if table == "embedding" else "lm_head.weight"
        return self._float(name, (self.config.vocab, self.config.hidden), start, stop)

    def lm_head(self) -> np.ndarray | None:
        """None when the head is tied to the embedding."""
        if self.config.tied_embeddings:
            return None
        return self._float("lm_head.weight", (self.config.vocab, self.config.hidden))

    def final_norm(self) -> np.ndarray:
        return self._float("model.norm.weight", (self.config.hidden,))

    def norm(self, layer: int, name: str) -> np.ndarray | None:
        c = self.config
        module = NORMS.get(name) or self._sub.get(name) or (QK_NORMS.get(name) if c.qk_norm else None)
        if module is None:
            return None
        return self._float(f"model.layers.{layer}.{module}.weight", (c.norm_dim(name),))

    def linear(self, layer: int, name: str) -> tuple[np.ndarray, float]:
        c = self.config
        out_f, in_f = c.linear_shape(name)
        module = f"model.layers.{layer}.{LINEARS[name]}"
        if any(module == m or module.endswith("." + m) for m in self.not_converted):
            raise FormatError(f"{self.path}: {module} is kept in full precision (modules_to_not_convert); "
                              "tellme needs every decoder linear ternary")
        wname = module + ".weight"
        f = self.store.file(wname)
        shape, dtype = f.shape(wname), f.dtype(wname)
        if dtype == "U8":
            if shape != ((out_f + 3) // 4, in_f):
                raise FormatError(f"{f.path}: packed tensor {wname!r} has shape {shape}, "
                                  f"expected {((out_f + 3) // 4, in_f)} for a {out_f}x{in_f} linear")
            t = unpack_bitlinear(f.read(wname), out_f)
            if (t > 1).any():
                raise FormatError(f"{f.path}: tensor {wname!r} holds the unused 2-bit code 3")
            return t, self._stored_scale(module, wname)
        if shape != (out_f, in_f):
            raise FormatError(f"{f.path}: tensor {wname!r} has shape {shape}, expected {(out_f, in_f)}")
        w = f.float32(wname)
        if self.linear_class == "online":
            return absmean_ternary_like_torch(w)
        if self.linear_class == "values":
            try:
                return ternary_from_values(w, groups=True)
            except ValueError as e:
                raise FormatError(f"{f.path}: tensor {wname!r} {e}: tellme runs ternary models (a Qwen3 "
                                  "checkpoint must hold Ternary Bonsai's values)") from None
        if not np.isin(w, (-1.0, 0.0, 1.0)).all():
            raise FormatError(f"{f.path}: tensor {wname!r} should hold ternary values for linear_class "
                              f"{self.linear_class!r}")
        return w.astype(np.int8), self._stored_scale(module, wname)

    def _stored_scale(self, module: str, wname: str) -> float:
        name = module + ".weight_scale"
        if name not in self.store:
            raise FormatError(f"{self.path}: {wname!r} is quantized but {name!r} is missing")
        s = self.store.file(name).float32(name).reshape(-1)
        if s.size != 1 or not np.isfinite(s[0]) or s[0] == 0:
            raise FormatError(f"{self.path}: {name!r} must be one finite non-zero value, got {s[:4]}")
        # BitLinear divides by weight_scale; AutoBitLinear multiplies by it
        return float(np.float32(1.0) / s[0]) if self.linear_class == "bitlinear" else float(s[0])
