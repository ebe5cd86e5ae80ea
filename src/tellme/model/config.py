"""Model configuration, read from a Hugging Face `config.json`.

Three architectures share one forward pass and differ only in what this records:

| architecture                         | sub-norms | FFN act | weights                              |
|--------------------------------------|-----------|---------|--------------------------------------|
| `bitnet` (BitNet b1.58 2B-4T)        | yes       | relu2   | packed 2-bit + weight_scale, or bf16 |
| `BitnetForCausalLM` (1bitLLM)        | yes       | silu    | fp16 masters, absmean at load        |
| `llama` + quant_method `bitnet`      | no        | silu    | packed 2-bit + weight_scale          |
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..formats.safetensors import FormatError

ARCHITECTURES = ("bitnet", "bitnet-1bitllm", "llama-bitnet")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    eps: float
    activation: str                  # "silu" | "relu2"
    sub_norms: bool
    tied_embeddings: bool
    rope_theta: float
    rope_scaling: dict | None = None  # llama3-style frequency scaling, as in config.json
    # How ternary linears are stored: "bitlinear" (packed, W = T / weight_scale),
    # "autobitlinear" (packed or unpacked, W = T * weight_scale), "online" (float masters, absmean).
    linear_class: str = "online"
    not_converted: tuple[str, ...] = ()  # module names kept in full precision
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    stop_strings: tuple[str, ...] = ()  # generation_config.json: end of a chat turn

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(out, in) of decoder linear `name` (q, k, v, o, gate, up, down)."""
        qd, kvd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q": (qd, self.hidden), "k": (kvd, self.hidden), "v": (kvd, self.hidden), "o": (self.hidden, qd),
                "gate": (self.intermediate, self.hidden), "up": (self.intermediate, self.hidden),
                "down": (self.hidden, self.intermediate)}[name]

    def norm_dim(self, name: str) -> int:
        """Length of norm `name` (attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm)."""
        return {"attn_sub_norm": self.heads * self.head_dim, "ffn_sub_norm": self.intermediate}.get(name, self.hidden)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        d["not_converted"] = tuple(d["not_converted"])
        d["eos_token_ids"] = tuple(d["eos_token_ids"])
        d["stop_strings"] = tuple(d.get("stop_strings", ()))
        return cls(**d)

    @classmethod
    def from_hf(cls, path: Path) -> "ModelConfig":
        file = path / "config.json"
        try:
            c = json.loads(file.read_text())
        except FileNotFoundError:
            raise FormatError(f"{path}: no config.json (expected a Hugging Face model directory)") from None
        except json.JSONDecodeError as e:
            raise FormatError(f"{file}: invalid JSON ({e})") from e
        archs = c.get("architectures") or []
        model_type = c.get("model_type")
        quant = c.get("quantization_config") or {}
        if model_type == "bitnet":
            arch = "bitnet"
        elif "BitnetForCausalLM" in archs:
            arch = "bitnet-1bitllm"
        elif model_type == "llama" and quant.get("quant_method") == "bitnet":
            arch = "llama-bitnet"
        else:
            raise FormatError(f"{file}: unsupported architecture (model_type={model_type!r}, "
                              f"architectures={archs}); tellme runs model_type 'bitnet', "
                              "'BitnetForCausalLM' and 'llama' with quantization_config.quant_method 'bitnet'")
        if quant and quant.get("quant_method") not in (None, "bitnet"):
            raise FormatError(f"{file}: quantization method {quant.get('quant_method')!r} is not ternary")
        if quant.get("use_rms_norm"):
            raise FormatError(f"{file}: quantization_config.use_rms_norm (an RMSNorm inside every linear) "
                              "is not supported")
        if c.get("attention_bias") or c.get("mlp_bias"):
            raise FormatError(f"{file}: linear biases are not supported")

        def need(key):
            if key not in c:
                raise FormatError(f"{file}: missing {key!r}")
            return c[key]

        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        act = c.get("hidden_act", "silu")
        activation = {"silu": "silu", "swish": "silu", "relu2": "relu2"}.get(act)
        if activation is None:
            raise FormatError(f"{file}: unsupported hidden_act {act!r} (expected silu or relu2)")
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        theta = c.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise FormatError(f"{file}: unsupported RoPE type {rope_type!r} (expected default or llama3)")
        if quant:
            linear_class = quant.get("linear_class", "bitlinear")
            if linear_class == "autobitlinear" and quant.get("quantization_mode", "offline") == "online":
                linear_class = "online"
        else:
            linear_class = "online"
        eos = c.get("eos_token_id")
        eos = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        gen_file = path / "generation_config.json"
        try:
            gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
        except json.JSONDecodeError as e:
            raise FormatError(f"{gen_file}: invalid JSON ({e})") from e
        stops = gen.get("stop_strings") or ()
        stops = (stops,) if isinstance(stops, str) else tuple(stops)
        return cls(
            architecture=arch,
            hidden=hidden,
            intermediate=int(need("intermediate_size")),
            layers=int(need("num_hidden_layers")),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or hidden // heads),
            vocab=int(need("vocab_size")),
            context=int(c.get("max_position_embeddings", 2048)),
            eps=float(c.get("rms_norm_eps", 1e-6)),
            activation=activation,
            sub_norms=arch != "llama-bitnet",
            tied_embeddings=bool(c.get("tie_word_embeddings", arch == "bitnet")),
            rope_theta=float(theta),
            rope_scaling=dict(rope) if rope_type == "llama3" else None,
            linear_class=linear_class,
            not_converted=tuple(quant.get("modules_to_not_convert") or ()),
            eos_token_ids=eos,
            bos_token_id=c.get("bos_token_id"),
            stop_strings=stops,
        )
