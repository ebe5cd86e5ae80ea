"""BitNet b1.58 quantization-aware training for small models: `tellme train` / `python -m tellme.train`.

The model is transformers' `bitnet` architecture (the one of BitNet b1.58 2B-4T: RMSNorm, RoPE,
GQA, ReLU^2 FFN, attention and FFN sub-norms, tied embeddings) with every decoder linear trained
the BitNet b1.58 way: in the forward pass weights are absmean-quantized to {-1, 0, 1} * mean|W|
and activations absmax-quantized per token to int8; gradients pass straight through both
(transformers' WeightQuant / ActQuant). The result is saved like 2B-4T (packed 2-bit weights +
weight_scale, `autobitlinear` offline), so tellme loads it through the same path.

Needs the `train` extra (torch, transformers, matplotlib); the runtime never imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UsageError

SPECIAL = "<|endoftext|>"
# The default model's chat: the user speaks as ROMEO, the model answers as JULIET, a speech ends
# at a blank line (generation_config.json's stop_strings).
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
                 "{% elif m['role'] == 'user' %}ROMEO:\n{{ m['content'] }}\n\n"
                 "{% else %}JULIET:\n{{ m['content'] }}\n\n{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}JULIET:\n{% endif %}")


@dataclass
class TrainConfig:
    vocab: int = 2048
    hidden: int = 256
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 704
    context: int = 256
    seq: int = 128
    batch: int = 16
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.05
    steps: int = 4000
    minutes: float = 60.0   # stop early when this budget is spent
    eval_every: int = 200
    seed: int = 0


def train_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def build_model(c: TrainConfig):
    import torch
    import torch.nn.functional as F
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import ActQuant, WeightQuant

    class QATLinear(torch.nn.Linear):
        """BitNet b1.58 linear: ternary weights and int8 activations forward, straight-through back."""

        def forward(self, x):
            return F.linear(ActQuant.apply(x), WeightQuant.apply(self.weight))

    cfg = BitNetConfig(vocab_size=c.vocab, hidden_size=c.hidden, intermediate_size=c.intermediate,
                       num_hidden_layers=c.layers, num_attention_heads=c.heads, num_key_value_heads=c.kv_heads,
                       max_position_embeddings=c.context, hidden_act="relu2", rms_norm_eps=1e-5,
                       rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                       initializer_range=0.02)
    model = BitNetForCausalLM(cfg)
    for m in model.model.layers.modules():
        if type(m) is torch.nn.Linear:
            m.__class__ = QATLinear  # same parameters, quantization-aware forward
    return model


def lr_at(step: int, c: TrainConfig) -> float:
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    t = min(1.0, (step - c.warmup) / max(1, c.steps - c.warmup))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * t))


def evaluate(model, ids, c: TrainConfig, max_tokens: int | None = None) -> float:
    """Perplexity of `ids` in non-overlapping windows of `context` tokens (first token of each
    window unscored)."""
    import torch

    ids = ids[:max_tokens] if max_tokens else ids
    nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(ids) - 1, c.context):
            x = ids[i:i + c.context].unsqueeze(0)
            if x.shape[1] < 2:
                break
            logits = model(input_ids=x).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += x.shape[1] - 1
    model.train()
    return math.exp(nll / count)


def save(model, tok, c: TrainConfig, out: Path, meta: dict) -> None:
    """A Hugging Face `bitnet` directory with packed ternary weights, like BitNet b1.58 2B-4T."""
    import torch
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embedding
        p = p.detach().float()
        if name.endswith("_proj.weight"):
            # exactly WeightQuant's arithmetic, so the saved T and scale are what training used
            inv = 1.0 / p.abs().mean().clamp(min=1e-5)
            ternary = (p * inv).round().clamp(-1, 1).to(torch.int8)
            state[name] = pack_weights(ternary.clone())
            state[name[:-len("weight")] + "weight_scale"] = (1.0 / inv).reshape(1)
        else:
            state[name] = p.contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                     "quantization_mode": "offline"}
    config["architectures"] = ["BitNetForCausalLM"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"stop_strings": ["\n\n"]}, indent=2))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": SPECIAL, "chat_template": CHAT_TEMPLATE}, indent=2))
    (out / "training.json").write_text(json.dumps({"config": asdict(c), **meta}, indent=2))


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history if "train_loss" in h], [h["train_loss"] for h in history if "train_loss" in h],
            label="training loss (50-step mean)")
    ev = [h for h in history if "val_loss" in h]
    ax.plot([h["step"] for h in ev], [h["val_loss"] for h in ev], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("BitNet b1.58 QAT on tinyshakespeare")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(text_path: str, out: str, c: TrainConfig, plot: str | None = None, log=print) -> dict:
    import numpy as np
    import torch

    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    text = Path(text_path).read_text(encoding="utf-8")
    split = int(len(text) * 0.9)  # the last 10% is held out
    train_text, val_text = text[:split], text[split:]
    tok = train_tokenizer(train_text, c.vocab)
    train_ids = torch.tensor(tok.encode(train_text).ids)
    val_ids = torch.tensor(tok.encode(val_text).ids)
    if len(train_ids) < c.seq + 2 or len(val_ids) < c.seq + 1:
        raise UsageError(f"{text_path}: {len(train_ids)} training and {len(val_ids)} validation tokens; training "
                         f"needs more than one sequence ({c.seq} tokens, --seq) in each (the last 10% is held out)")
    log(f"tokens: {len(train_ids)} training, {len(val_ids)} validation (vocabulary {c.vocab})")

    model = build_model(c)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(c.seed)
    history, recent, start, step = [], [], time.time(), 0
    for step in range(c.steps):
        if time.time() - start > c.minutes * 60:
            log(f"time budget of {c.minutes} min spent at step {step}")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c)
        at = torch.randint(0, len(train_ids) - c.seq - 1, (c.batch,), generator=gen)
        x = torch.stack([train_ids[i:i + c.seq] for i in at])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 50 == 0:
            history.append({"step": step + 1, "train_loss": sum(recent) / len(recent)})
            recent = []
        if (step + 1) % c.eval_every == 0:
            val = math.log(evaluate(model, val_ids, c, max_tokens=16384))
            history.append({"step": step + 1, "val_loss": val})
            log(f"step {step + 1}: train {loss.item():.3f}, val {val:.3f} ({time.time() - start:.0f} s)")
    else:
        step = c.steps
    val_ppl = evaluate(model, val_ids, c)
    meta = {"steps": step, "seconds": round(time.time() - start, 1), "val_perplexity": val_ppl,
            "val_tokens": len(val_ids), "history": history}
    save(model, tok, c, Path(out), meta)
    if plot and history:
        plot_loss(history, Path(plot))
    log(f"saved {out}: validation perplexity {val_ppl:.2f} after {step} steps")
    return meta


def add_arguments(p) -> None:
    p.add_argument("text", help="training text, UTF-8 (the shipped model was trained on tinyshakespeare.txt)")
    p.add_argument("--out", default="tellme-model", help="output directory (new, or empty)")
    p.add_argument("--force", action="store_true", help="write into --out even if it holds files")
    p.add_argument("--plot", help="write the loss curve to this PNG")
    for f, v in asdict(TrainConfig()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)


def check_output_dir(out: Path, force: bool) -> None:
    """Before training starts: the output must be a directory that can be written and holds no
    files (unless --force), so that the work is not lost at the end."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} holds files; pass --force to write into it")
    parent = out if out.is_dir() else out.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write to {parent}")


def run(args) -> int:
    c = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    text = Path(args.text)
    if not text.is_file():
        raise UsageError(f"{text}: no such text file")
    check_output_dir(Path(args.out), args.force)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print("tellme train needs the train extra: pip install 'tellme[train]'", file=sys.stderr)
        return 1
    train(args.text, args.out, c, args.plot)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tellme.train", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
