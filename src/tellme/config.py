"""`ModelConfig`: what one model is, whatever file it came from, and the names of its parts.

Each format reader builds one (formats/hf.py from config.json, formats/gguf_model.py from GGUF
metadata). Three architectures share one forward pass and differ only in what this records:

| architecture     | what it is                               | sub-norms | FFN act |
|------------------|------------------------------------------|-----------|---------|
| `bitnet-2b4t`    | BitNet b1.58 2B-4T (HF `bitnet`)         | yes       | relu2   |
| `bitnet-1bitllm` | 1bitLLM `BitnetForCausalLM`              | yes       | silu    |
| `llama-bitnet`   | LLaMA with quant_method `bitnet`         | no        | silu    |
| `qwen3`          | Qwen3 with ternary weights (Bonsai)      | no        | silu    |

Qwen3 adds an RMSNorm over each head of q and k before RoPE (`qk_norm`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError

LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")      # the ternary linears of a layer
NORM_NAMES = ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm", "q_norm", "k_norm")
ARCHITECTURES = ("bitnet-2b4t", "bitnet-1bitllm", "llama-bitnet", "qwen3")
ROPE_KEYS = {  # rope_type -> the keys it needs (numbers)
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
    "factors": ("factors",),
}
ACTIVATIONS = ("silu", "relu2")
KV_FORMATS = ("f16", "q8")  # the KV cache: fp16, or int8 with a scale per (kv head, position)
DEFAULT_KV = "f16"
_RENAMED = {"bitnet": "bitnet-2b4t"}  # architecture ids in files written before the rename
# Sizes beyond these are refused before anything is allocated: far past every model of this field,
# small enough that no product of them overflows or asks for absurd memory unchecked.
LIMITS = {"hidden": 1 << 16, "intermediate": 1 << 18, "layers": 1 << 10, "heads": 1 << 10, "kv_heads": 1 << 10,
          "head_dim": 1 << 12, "vocab": 1 << 22, "context": 1 << 20}


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
    rope_scaling: dict | None = None  # llama3 or yarn as in config.json, or GGUF's per-frequency factors
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    stop_strings: tuple[str, ...] = ()  # generation_config.json: end of a chat turn
    ffn_padded_from: int | None = None  # the FFN width before a GGUF writer zero-padded it to `intermediate`
    qk_norm: bool = False            # RMSNorm over each head of q and k before RoPE (Qwen3)
    source: str = field(default="", compare=False)  # the file it came from, for messages (not saved)

    def __post_init__(self):
        """Every value is checked here, whichever format it came from (ConfigError names it)."""
        def bad(what):
            raise ConfigError(f"{self.source or 'model configuration'}: {what}")

        if self.architecture not in ARCHITECTURES:
            bad(f"unknown architecture {self.architecture!r}")
        for name, cap in LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= cap:
                bad(f"{name} = {v!r}: expected an integer from 1 to {cap}")
        if self.heads % self.kv_heads:
            bad(f"{self.heads} attention heads cannot be shared by {self.kv_heads} KV heads")
        if self.head_dim % 2:
            bad(f"head_dim = {self.head_dim}: RoPE needs an even head size")
        for name in ("eps", "rope_theta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                bad(f"{name} = {v!r}: expected a positive number")
        if self.activation not in ACTIVATIONS:
            bad(f"unsupported activation {self.activation!r} (expected {' or '.join(ACTIVATIONS)})")
        for name in ("sub_norms", "tied_embeddings", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} = {getattr(self, name)!r}: expected true or false")
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.vocab for t in self.eos_token_ids):
            bad(f"eos token ids {list(self.eos_token_ids)} must be token ids below the vocabulary of {self.vocab}")
        if self.bos_token_id is not None and (not isinstance(self.bos_token_id, int) or isinstance(self.bos_token_id, bool)):
            bad(f"bos_token_id = {self.bos_token_id!r}: expected a token id")
        if not all(isinstance(s, str) and s for s in self.stop_strings):
            bad(f"stop strings {list(self.stop_strings)} must be non-empty strings")
        p = self.ffn_padded_from
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 1 <= p < self.intermediate):
            bad(f"ffn_padded_from = {p!r}: expected an FFN width below intermediate = {self.intermediate}")
        s = self.rope_scaling
        if s is not None:
            if not isinstance(s, dict):
                bad(f"RoPE scaling {s!r}: expected a mapping")
            kind = s.get("rope_type") if s.get("rope_type") in ("factors", "yarn") else "llama3"  # files before yarn
            keys = ROPE_KEYS[kind]
            try:
                values = [float(x) for k in keys for x in (s[k] if k == "factors" else [s[k]])]
            except (KeyError, TypeError, ValueError):
                bad(f"RoPE scaling {s!r} needs numbers for {', '.join(keys)}")
            if not all(math.isfinite(x) and x > 0 for x in values) or (
                    keys[0] == "factors" and len(s["factors"]) != self.head_dim // 2):
                bad(f"RoPE scaling {s!r} has a value that is not a positive number, or the wrong count")
            if kind == "llama3" and s["low_freq_factor"] == s["high_freq_factor"]:
                bad("RoPE scaling: low_freq_factor equals high_freq_factor")

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(out, in) of decoder linear `name` (q, k, v, o, gate, up, down)."""
        qd, kvd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q": (qd, self.hidden), "k": (kvd, self.hidden), "v": (kvd, self.hidden), "o": (self.hidden, qd),
                "gate": (self.intermediate, self.hidden), "up": (self.intermediate, self.hidden),
                "down": (self.hidden, self.intermediate)}[name]

    def norm_names(self) -> tuple[str, ...]:
        """The norms every layer has (for code that builds a model; the engine checks the same rule)."""
        return NORM_NAMES[:2] + (NORM_NAMES[2:4] if self.sub_norms else ()) + (NORM_NAMES[4:] if self.qk_norm else ())

    def norm_dim(self, name: str) -> int:
        """Length of norm `name` (attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm, q_norm, k_norm)."""
        return {"attn_sub_norm": self.heads * self.head_dim, "ffn_sub_norm": self.intermediate,
                "q_norm": self.head_dim, "k_norm": self.head_dim}.get(name, self.hidden)

    def to_json(self) -> str:
        d = asdict(self)
        del d["source"]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str, source: str = "") -> "ModelConfig":
        try:
            d = json.loads(text)
            for gone in ("linear_class", "not_converted"):  # files written before they moved to the HF reader
                d.pop(gone, None)
            d["eos_token_ids"] = tuple(d["eos_token_ids"])
            d["stop_strings"] = tuple(d.get("stop_strings", ()))
            d["architecture"] = _RENAMED.get(d["architecture"], d["architecture"])
            unknown = set(d) - {f.name for f in fields(cls)}
            if unknown:
                raise ConfigError(f"unknown keys {sorted(unknown)}")
            return cls(**d, source=source)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise ConfigError(f"{source or 'model configuration'}: corrupt configuration ({e!r})") from None
