"""`ModelConfig`: what one model is, whatever file it came from, and the names of its parts.

Each format reader builds one (formats/hf.py from config.json, formats/gguf_model.py from GGUF
metadata). Three architectures share one forward pass and differ only in what this records:

| architecture     | what it is                               | sub-norms | FFN act |
|------------------|------------------------------------------|-----------|---------|
| `bitnet-2b4t`    | BitNet b1.58 2B-4T (HF `bitnet`)         | yes       | relu2   |
| `bitnet-1bitllm` | 1bitLLM `BitnetForCausalLM`              | yes       | silu    |
| `llama-bitnet`   | LLaMA with quant_method `bitnet`         | no        | silu    |
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")      # the ternary linears of a layer
NORM_NAMES = ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm")
_RENAMED = {"bitnet": "bitnet-2b4t"}  # architecture ids in files written before the rename


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
    tied_embeddings: bool            # the LM head is the embedding table
    rope_theta: float
    rope_scaling: dict | None = None  # llama3-style scaling as in config.json, or GGUF's per-frequency factors
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    stop_strings: tuple[str, ...] = ()  # generation_config.json: end of a chat turn

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(out, in) of decoder linear `name` (q, k, v, o, gate, up, down)."""
        qd, kvd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q": (qd, self.hidden), "k": (kvd, self.hidden), "v": (kvd, self.hidden), "o": (self.hidden, qd),
                "gate": (self.intermediate, self.hidden), "up": (self.intermediate, self.hidden),
                "down": (self.hidden, self.intermediate)}[name]

    def norm_names(self) -> tuple[str, ...]:
        """The norms every layer has (for code that builds a model; the engine checks the same rule)."""
        return NORM_NAMES if self.sub_norms else NORM_NAMES[:2]

    def norm_dim(self, name: str) -> int:
        """Length of norm `name` (attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm)."""
        return {"attn_sub_norm": self.heads * self.head_dim, "ffn_sub_norm": self.intermediate}.get(name, self.hidden)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        for gone in ("linear_class", "not_converted"):  # files written before they moved to the HF reader
            d.pop(gone, None)
        d["eos_token_ids"] = tuple(d["eos_token_ids"])
        d["stop_strings"] = tuple(d.get("stop_strings", ()))
        d["architecture"] = _RENAMED.get(d["architecture"], d["architecture"])
        return cls(**d)
