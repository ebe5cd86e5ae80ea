"""Perplexity cost of tellme's int8 embedding/LM head, on a small BitNet b1.58 model trained here.

No trained ternary checkpoint can be downloaded here, so this trains one briefly: transformers'
BitNetForCausalLM whose decoder linears quantize like AutoBitLinear in online mode (absmean
ternary weights, per-token int8 activations, straight-through gradients), on the first 90% of
tinyshakespeare with a byte-level BPE. It saves the bf16-master checkpoint, loads it in tellme with
head="fp32" and head="int8" and prints both perplexities on the held-out 10%.

    python tools/int8_head_cost.py ../shared/data/tinyshakespeare.txt --minutes 6 --out /tmp/shakespeare
"""

import argparse
import json
import os
import time
import types
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--out", default="/tmp/shakespeare")
    ap.add_argument("--vocab", type=int, default=1024)
    args = ap.parse_args()

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import ActQuant, WeightQuant

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    text = Path(args.text).read_text()
    split = int(len(text) * 0.9)
    train_text, val_text = text[:split], text[split:]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = torch.tensor(tok.encode(train_text).ids)

    cfg = BitNetConfig(vocab_size=args.vocab, hidden_size=256, intermediate_size=640, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       hidden_act="relu2", rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    model = BitNetForCausalLM(cfg)

    def bitlinear(self, x):
        return F.linear(ActQuant.apply(x), WeightQuant.apply(self.weight))

    for name, m in model.model.layers.named_modules():
        if isinstance(m, torch.nn.Linear):
            m.forward = types.MethodType(bitlinear, m)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    seq, batch, step, start = 128, 16, 0, time.time()
    while time.time() - start < args.minutes * 60:
        at = torch.randint(0, len(ids) - seq - 1, (batch,))
        x = torch.stack([ids[i:i + seq] for i in at])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    config["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                     "quantization_mode": "online"}
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))

    import tellme
    val = tellme.load(out).encode(val_text)
    for head in ("fp32", "int8"):
        r = tellme.load(out, head=head).perplexity(val, window=256, stride=128)
        print(f"head={head}: perplexity {r['perplexity']:.4f} over {r['tokens']} held-out tokens")


if __name__ == "__main__":
    main()
