"""Small random-init checkpoints in every supported format, made with transformers.

Each `make_*` writes a Hugging Face directory the way that format stores its weights and returns
the reference model: transformers' own model loaded from that directory where transformers can
read the format, otherwise the same weights in the equivalent transformers architecture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitLinear's torch.compile would build C++ for minutes

import numpy as np
import torch
from safetensors.torch import save_file

TEXT = ("From fairest creatures we desire increase, that thereby beauty's rose might never die, "
        "but as the riper should by time decease, his tender heir might bear his memory. "
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. ") * 4

FORMATS = ("bitnet-packed", "bitnet-bitlinear", "bitnet-bf16", "1bitllm", "llama-bitnet", "qwen3-ternary")
LINEAR_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_tokenizer(path: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - 8, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(path / "tokenizer.json"))
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": template}))


def _config_kwargs(hidden, layers, heads, kv_heads, intermediate, vocab, act, head_dim=None):
    return dict(head_dim=head_dim or hidden // heads, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, intermediate_size=intermediate, vocab_size=vocab,
                hidden_act=act, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                bos_token_id=0, eos_token_id=1, initializer_range=0.5)


def _random_state(model_cls, config, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = model_cls(config)
    state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    for k in state:  # norms: not all ones, so that applying them is checked
        if k.endswith("norm.weight") or k.endswith("layernorm.weight"):
            state[k] = 1.0 + 0.2 * torch.randn_like(state[k])
    return state


def _absmean(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    return (w * s).round().clamp(-1, 1), 1.0 / s


def _save(path: Path, config: dict, state: dict[str, torch.Tensor]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))


def _quantize_linears(state, kind: str) -> dict[str, torch.Tensor]:
    from transformers.integrations.bitnet import pack_weights

    out = {}
    for k, v in state.items():
        if k.endswith("_proj.weight") and ".layers." in k:
            t, scale = _absmean(v)
            out[k] = pack_weights(t.to(torch.int8).clone())
            ws = scale if kind == "autobitlinear" else 1.0 / scale
            out[k[:-len("weight")] + "weight_scale"] = ws.reshape(1).float()
        else:
            out[k] = v
    return out


def _reference(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _group_ternary(state, group: int, binary: bool, seed: int) -> dict[str, torch.Tensor]:
    """Ternary Bonsai's weights: each decoder linear, the embedding and the LM head become T times
    one scale per `group` weights along a row, scales exact in bf16 (and so in fp16); `binary`: T
    in {-1, 1} (Q1_0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if (k.rsplit(".", 2)[-2] in LINEAR_SUFFIXES and ".layers." in k) or k in ("model.embed_tokens.weight",
                                                                                 "lm_head.weight"):
            t, _ = _absmean(v)
            if binary:
                t = torch.where(v >= 0, 1.0, -1.0)
            rows, cols = t.shape
            d = (0.01 + 0.2 * torch.rand(rows, cols // group, generator=g)).bfloat16().float()
            out[k] = (t.reshape(rows, cols // group, group) * d[..., None]).reshape(rows, cols)
        else:
            out[k] = v
    return out


def quantize_linear_inputs(model) -> None:
    """Hooks that give a float model BitNet's activation quantization (per token absmax int8 before
    every decoder linear), as transformers' BitLinear does: the reference for ternary Qwen3."""
    def hook(_module, args):
        x = args[0]
        scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        return ((x * scale).round().clamp(-128, 127) / scale,)

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in LINEAR_SUFFIXES:
            module.register_forward_pre_hook(hook)


def make_checkpoint(path: Path, fmt: str, hidden=192, layers=2, heads=6, kv_heads=2, intermediate=320,
                    vocab=320, act=None, seed=0, tokenizer=True, head_dim=None, group=128, binary=False,
                    tied=None):
    """Writes checkpoint `fmt` to path; returns the transformers reference model. head_dim: other
    than hidden / heads, as Falcon3's and Qwen3's configs allow; group, binary and tied: of
    "qwen3-ternary" (Ternary Bonsai: bf16 values, a scale per `group` weights)."""
    from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if fmt.startswith("bitnet") or fmt == "1bitllm":
        act = act or ("relu2" if fmt.startswith("bitnet") else "silu")
        cfg = BitNetConfig(**_config_kwargs(hidden, layers, heads, kv_heads, intermediate, vocab, act, head_dim),
                           tie_word_embeddings=fmt != "1bitllm")
        state = _random_state(BitNetForCausalLM, cfg, seed)
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        config = cfg.to_dict()
        if fmt in ("bitnet-packed", "bitnet-bitlinear"):
            kind = "autobitlinear" if fmt == "bitnet-packed" else "bitlinear"
            config["quantization_config"] = {"quant_method": "bitnet", "linear_class": kind,
                                             "quantization_mode": "offline"}
            _save(path, config, _quantize_linears(state, kind))
            ref = _reference(path)
        else:  # float masters, quantized online with absmean
            config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                             "quantization_mode": "online"}
            dtype = torch.bfloat16 if fmt == "bitnet-bf16" else torch.float16
            state = {k: v.to(dtype) for k, v in state.items()}
            ref_dir = path if fmt == "bitnet-bf16" else path.with_name(path.name + "-reference")
            _save(ref_dir, config, state)
            ref = _reference(ref_dir)
            if fmt == "1bitllm":  # LLaMA naming with the sub-norms' original names, fp16 masters
                config = LlamaConfig(**_config_kwargs(hidden, layers, heads, kv_heads, intermediate, vocab, act, head_dim)).to_dict()
                config.update(architectures=["BitnetForCausalLM"], model_type="llama", weight_bits=1, input_bits=8,
                              tie_word_embeddings=False)
                renamed = {k.replace("self_attn.attn_sub_norm", "self_attn.inner_attn_ln")
                            .replace("mlp.ffn_sub_norm", "mlp.ffn_layernorm"): v for k, v in state.items()}
                _save(path, config, renamed)
    elif fmt == "qwen3-ternary":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        cfg = Qwen3Config(**_config_kwargs(hidden, layers, heads, kv_heads, intermediate, vocab, act or "silu", head_dim),
                          tie_word_embeddings=bool(tied))
        state = _group_ternary(_random_state(Qwen3ForCausalLM, cfg, seed), group, binary, seed)
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        _save(path, cfg.to_dict(), {k: v.bfloat16() for k, v in state.items()})
        # in float64: a float32 forward of these weights flips int8 roundings within a few tokens
        # (its logits differ from its own float64 forward's as much as tellme's do)
        ref = _reference(path).double()
        quantize_linear_inputs(ref)
    elif fmt == "llama-bitnet":
        act = act or "silu"
        cfg = LlamaConfig(**_config_kwargs(hidden, layers, heads, kv_heads, intermediate, vocab, act, head_dim),
                          tie_word_embeddings=False)
        state = _random_state(LlamaForCausalLM, cfg, seed)
        config = cfg.to_dict()
        config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                         "quantization_mode": "offline", "modules_to_not_convert": ["lm_head"]}
        _save(path, config, _quantize_linears(state, "bitlinear"))
        ref = _reference(path)
    else:
        raise ValueError(fmt)
    if tokenizer:
        write_tokenizer(path, vocab)
    return ref


def reference_logits(ref, ids) -> np.ndarray:
    with torch.no_grad():
        return ref(torch.tensor([list(ids)])).logits[0].float().numpy()


def reference_logits_fp16_kv(ref, ids) -> np.ndarray:
    """Reference logits with K (after RoPE) and V rounded to fp16, as tellme's KV cache stores them.

    This isolates tellme's arithmetic from the cache's storage precision: with fp32 K/V, a rounding
    difference of 2^-11 in a score can move an int8-quantized activation across a rounding boundary,
    and random small models amplify such flips.
    """
    from transformers.models.bitnet import modeling_bitnet
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen3 import modeling_qwen3

    originals = {m: m.apply_rotary_pos_emb for m in (modeling_bitnet, modeling_llama, modeling_qwen3)}

    def wrap(fn):
        def rounded(q, k, cos, sin, *args, **kwargs):
            q, k = fn(q, k, cos, sin, *args, **kwargs)
            return q, k.to(torch.float16).to(k.dtype)
        return rounded

    hooks = [mod.register_forward_hook(lambda _m, _i, out: out.to(torch.float16).to(out.dtype))
             for name, mod in ref.named_modules() if name.endswith("v_proj")]
    try:
        for m, fn in originals.items():
            m.apply_rotary_pos_emb = wrap(fn)
        return reference_logits(ref, ids)
    finally:
        for m, fn in originals.items():
            m.apply_rotary_pos_emb = fn
        for h in hooks:
            h.remove()
