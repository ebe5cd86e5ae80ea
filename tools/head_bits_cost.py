"""Perplexity cost of a cheaper LM head on the shipped model: int8 per row against 6-, 5- and 4-bit
heads, on the held-out last 10% of the text the model was trained on.

The narrower heads are simulated: the head rows are rounded to symmetric codes (-31..31 for 6
bits, -15..15, -7..7) with one scale per row or per group of 32 or 64 along the hidden size,
dequantized, and run through the fp32 head; activations stay fp32. The last line runs the real
6-bit head (head="int6", tellme's default: int8 activations, integer products). What is measured is the cost of the weights' rounding alone (the int8
activations of an integer head cost +0.005% in benchmarks.md). The model's head is tied, so the
embedding keeps its own (fp32) copy: only the output projection is rounded.

    python tools/head_bits_cost.py ../shared/data/tinyshakespeare.txt
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np


def round_rows(table: np.ndarray, bits: int, group: int | None) -> np.ndarray:
    """Symmetric round-to-nearest with one absmax scale per row (group None) or per group."""
    top = 2 ** (bits - 1) - 1
    g = table.shape[1] if group is None else group
    blocks = table.reshape(table.shape[0], -1, g)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / top
    scale[scale == 0] = 1
    return (np.clip(np.rint(blocks / scale), -top, top) * scale).reshape(table.shape).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("--window", type=int, default=256)
    args = ap.parse_args()

    from tellme.loading import default_model_path, open_checkpoint
    from tellme.model import Model
    from tellme.packed import PackedModel, Rows

    text = Path(args.text).read_text()
    held_out = text[int(len(text) * 0.9):]  # what tellme.train held out
    reader = open_checkpoint(default_model_path())

    def perplexity(head: str, head_rows: np.ndarray | None = None) -> float:
        packed = PackedModel.pack(reader, head)
        if head_rows is not None:  # untie: the embedding keeps fp32, the output projection is rounded
            packed.config = dataclasses.replace(packed.config, tied_embeddings=False)
            packed.set_rows("lm_head", Rows(f32=head_rows))
        model = Model(packed, reader.tokenizer, args.window)
        return model.perplexity(held_out, window=args.window)["perplexity"]

    table = reader.embedding()
    base = perplexity("int8")
    print(f"held-out characters: {len(held_out)}")
    print(f"{'head':<24} {'perplexity':>10} {'vs int8':>8}")
    print(f"{'int8, per row':<24} {base:>10.4f} {'':>8}")
    for name, bits, group in (("fp32", None, None), ("6-bit, per row", 6, None), ("5-bit, per row", 5, None),
                              ("5-bit, groups of 32", 5, 32), ("4-bit, per row", 4, None),
                              ("4-bit, groups of 32", 4, 32), ("4-bit, groups of 64", 4, 64)):
        p = perplexity("fp32") if bits is None else perplexity("fp32", round_rows(table, bits, group))
        print(f"{name:<24} {p:>10.4f} {100 * (p / base - 1):>+7.2f}%")
    p = perplexity("int6")
    print(f"{'int6 head (default)':<24} {p:>10.4f} {100 * (p / base - 1):>+7.2f}%")


if __name__ == "__main__":
    main()
