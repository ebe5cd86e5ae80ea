"""Writing a model as GGUF for llama.cpp (TQ1_0, TQ2_0, Q2_0) or bitnet.cpp (I2_S), with the `gguf` library.

Architecture names follow what each graph computes: sub-norms and ReLU^2 (BitNet b1.58 2B-4T) is
`bitnet-b1.58`, sub-norms and SiLU (1bitLLM) is llama.cpp's `bitnet`, no sub-norms is `llama` (q
and k rows then in llama.cpp's RoPE-pair order), q/k norms is `qwen3`. The tensor names are
llama.cpp's. A model with a scale per group (Ternary Bonsai) is written only as Q2_0, whose
blocks (of the group size, 64 or 128) carry those scales.

Nothing is lost: ternary codes are stored as they are; a scale goes into the fp16 block scales
when fp16 holds it exactly, else into a `blk.{i}.{linear}.scale` tensor; the embedding and LM head
are written as F16, BF16 or F32, whichever holds every value exactly; norms as F32.

One exception: an FFN width that is not a whole number of blocks is zero-padded: gate and up gain
zero rows, down zero columns, which changes nothing, since act(0) * 0 = 0. With an FFN sub-norm
(BitNet; the shipped model's 704, bitnet_b1_58-3B's 8640) the RMS is then taken over the longer row:
its gamma is scaled to match, but eps acts as eps * n / padded, which no weight can undo, so such a
model is padded only when asked (`pad_ffn`). The file records the width in
`tellme.feed_forward_length_unpadded`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, quants

from ..config import LINEAR_NAMES, ModelConfig
from ..errors import UsageError
from ..kernels.layout import round_up
from ..rope import rope_frequencies, rope_pair_order
from .gguf_model import LINEAR_TENSORS, PADDED_FROM_KEY, QK_NORM_TENSORS, ROPE_FREQS
from .gguf_quants import I2_S, I2_S_FILE_TYPE, Q2_0, Q2_0_BLOCKS, TERNARY_TYPES, pack_q2_0, quantize_ternary

FILE_TYPES = {"tq1_0": LlamaFileType.MOSTLY_TQ1_0, "tq2_0": LlamaFileType.MOSTLY_TQ2_0, "i2_s": I2_S_FILE_TYPE,
              "q2_0": 41}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q2_0 (PrismML's files)
BLOCKS = {"tq1_0": 256, "tq2_0": 256, "i2_s": 128, "q2_0": 128}


def pad_sub_norm(gamma: np.ndarray, width: int) -> np.ndarray:
    """The FFN sub-norm's gamma for a row zero-padded to `width`: the mean square over the longer row
    is smaller by n / width, so gamma grows by sqrt(width / n) (what is left is eps, which now acts
    as eps * n / width). The padded entries meet zeros; they are 1."""
    n = gamma.size
    out = np.ones(width, dtype=np.float32)
    out[:n] = gamma * np.float32(np.sqrt(width / n))
    return out


def gguf_architecture(c: ModelConfig) -> str:
    if c.qk_norm:
        return "qwen3"
    if c.sub_norms:
        return "bitnet-b1.58" if c.activation == "relu2" else "bitnet"
    if c.activation == "silu":
        return "llama"
    raise UsageError("a ReLU^2 model without sub-norms has no llama.cpp architecture to be written as")


def grouped_q2_0(ternary: np.ndarray, scales: np.ndarray, qtype: str, name: str) -> np.ndarray:
    """Q2_0 bytes of a linear with a scale per group (blocks of the group: 64 or 128), or UsageError
    where another type, another group size or a scale fp16 cannot hold would lose something."""
    group = ternary.shape[1] // scales.shape[1]
    if qtype != "q2_0":
        raise UsageError(f"{name} has a scale per group of {group} weights, which {qtype.upper()} cannot hold "
                         "(one scale per tensor); write it as --type q2_0")
    if group not in Q2_0_BLOCKS:
        raise UsageError(f"{name} has a scale per group of {group} weights; Q2_0 has blocks of 64 or 128")
    if not np.array_equal(scales.astype(np.float16).astype(np.float32), scales):
        raise UsageError(f"{name} has group scales that fp16 cannot hold exactly; Q2_0 would round them")
    return pack_q2_0(ternary, scales)


TABLE_TYPES = (None, "q8_0", "f16", "bf16", "f32")  # write_gguf's embedding_type


def lossless_float(a: np.ndarray) -> tuple[np.ndarray, GGMLQuantizationType | None]:
    """a as F16, else BF16, else F32: the smallest that holds every value exactly."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    with np.errstate(over="ignore"):
        if np.array_equal(a.astype(np.float16).astype(np.float32), a):
            return a.astype(np.float16), None
    bits = a.view(np.uint32)
    if not (bits & 0xFFFF).any():
        return (bits >> 16).astype(np.uint16).view(np.uint8).reshape(a.shape[0], -1), GGMLQuantizationType.BF16
    return a, None


def write_gguf(ckpt, tokenizer, path: str | os.PathLike, qtype: str = "tq2_0",
               progress: Callable[[Iterator], Iterator] = iter, pad_ffn: bool = False,
               embedding_type: str | None = None) -> None:
    """Writes `ckpt` (a format reader: see formats/__init__.py) to `path` with ternary linears of type
    qtype. pad_ffn: pad an FFN that has a sub-norm too (not exact: see the module's docstring).
    embedding_type "q8_0": the embedding and LM head in llama.cpp's Q8_0 (lossy; the default is exact);
    "f16", "bf16" or "f32": in that float type, as the peers' converters write them (f16 and bf16
    round to nearest)."""
    if qtype not in TERNARY_TYPES:
        raise UsageError(f"unknown GGUF weight type {qtype!r}; expected one of {', '.join(TERNARY_TYPES)}")
    if embedding_type not in TABLE_TYPES:
        raise UsageError(f"unknown embedding type {embedding_type!r}; expected one of "
                         f"{', '.join(t for t in TABLE_TYPES if t)} or none (exact)")
    c: ModelConfig = ckpt.config
    arch = gguf_architecture(c)
    for name in LINEAR_NAMES:
        cols = c.linear_shape(name)[1]
        if cols % BLOCKS[qtype] and name != "down":  # down's rows are padded below
            raise UsageError(f"{qtype.upper()} stores rows in blocks of {BLOCKS[qtype]} weights; the {name} "
                             f"projection's rows have {cols}, so this model cannot be written as {qtype.upper()}")
    ffn = round_up(c.intermediate, BLOCKS[qtype])
    pad = ffn - c.intermediate
    if pad and c.sub_norms and not pad_ffn:
        raise UsageError(
            f"{qtype.upper()} stores rows in blocks of {BLOCKS[qtype]} weights and the FFN is {c.intermediate} wide. "
            f"Zero-padding it to {ffn} is exact only without an FFN sub-norm; this model has one, whose RMS would "
            "be taken over the longer row, so eps would act as eps * n / padded and the outputs move slightly "
            "(the shipped model: perplexity +1.9%). Pass --pad-ffn to write it anyway")
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")  # never leave a half-written model under the real name
    try:
        w = GGUFWriter(tmp, arch)
        w.add_name(path.stem)
        w.add_file_type(int(FILE_TYPES[qtype]))
        w.add_context_length(c.context)
        w.add_embedding_length(c.hidden)
        w.add_block_count(c.layers)
        w.add_feed_forward_length(ffn)
        if pad or c.ffn_padded_from:
            w.add_uint32(PADDED_FROM_KEY, c.ffn_padded_from or c.intermediate)
        w.add_string(f"{arch}.hidden_activation", c.activation)
        w.add_head_count(c.heads)
        w.add_head_count_kv(c.kv_heads)
        if c.head_dim * c.heads != c.hidden:
            w.add_key_length(c.head_dim)
            w.add_value_length(c.head_dim)
        w.add_rope_dimension_count(c.head_dim)
        w.add_rope_freq_base(c.rope_theta)
        w.add_layer_norm_rms_eps(c.eps)
        w.add_vocab_size(c.vocab)
        if tokenizer is not None:
            from .gguf_tokenizer import write_tokenizer
            write_tokenizer(w, tokenizer, c.vocab, c.bos_token_id, c.eos_token_ids)

        def table(name, a):
            a = np.ascontiguousarray(a, dtype=np.float32)
            if embedding_type in ("q8_0", "bf16"):
                kind = GGMLQuantizationType.Q8_0 if embedding_type == "q8_0" else GGMLQuantizationType.BF16
                w.add_tensor(name, quants.quantize(a, kind), raw_dtype=kind)
            elif embedding_type in ("f16", "f32"):
                w.add_tensor(name, a.astype(np.float16 if embedding_type == "f16" else np.float32))
            else:
                data, raw = lossless_float(a)
                w.add_tensor(name, data, raw_dtype=raw)

        table("token_embd.weight", ckpt.embedding())
        head = ckpt.lm_head()
        if head is not None:
            table("output.weight", head)
        w.add_tensor("output_norm.weight", np.ascontiguousarray(ckpt.final_norm(), dtype=np.float32))
        if c.rope_scaling and c.rope_scaling.get("rope_type") == "yarn":
            y = c.rope_scaling
            w.add_string(f"{arch}.rope.scaling.type", "yarn")
            w.add_float32(f"{arch}.rope.scaling.factor", float(y["factor"]))
            w.add_uint32(f"{arch}.rope.scaling.original_context_length", int(y["original_max_position_embeddings"]))
            for key, name in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow"),
                              ("attention_factor", "attn_factor")):
                if y.get(key) is not None:
                    w.add_float32(f"{arch}.rope.scaling.{name}", float(y[key]))
        elif c.rope_scaling:  # llama.cpp divides each frequency by a factor
            plain = dataclasses.replace(c, rope_scaling=None)
            w.add_tensor(ROPE_FREQS, (rope_frequencies(plain) / rope_frequencies(c)).astype(np.float32))
        for i in progress(range(c.layers)):
            for name in c.norm_names():
                g = np.ascontiguousarray(ckpt.norm(i, name), dtype=np.float32)
                if name == "ffn_sub_norm" and pad:
                    g = pad_sub_norm(g, ffn)
                w.add_tensor(f"blk.{i}.{QK_NORM_TENSORS.get(name, name)}.weight", g)
            for name in LINEAR_NAMES:
                ternary, scale = ckpt.linear(i, name)
                grouped = np.ndim(scale) > 0
                if pad and name in ("gate", "up", "down"):  # zero rows of gate and up, columns of down
                    ternary = np.pad(ternary, ((0, pad), (0, 0)) if name != "down" else ((0, 0), (0, pad)))
                    if grouped:  # and zero scales for them (pad is whole groups: they divide the block)
                        g_size = c.intermediate // scale.shape[1] if name == "down" else 1
                        scale = np.pad(scale, ((0, pad), (0, 0)) if name != "down" else ((0, 0), (0, pad // g_size)))
                if arch == "llama" and name in ("q", "k"):
                    order = rope_pair_order(c.heads if name == "q" else c.kv_heads, c.head_dim)
                    ternary, scale = ternary[order], (scale[order] if grouped else scale)
                base = f"blk.{i}.{LINEAR_TENSORS[name]}"
                if grouped:  # a scale per group: Q2_0 holds it in its block scales
                    w.add_tensor(base + ".weight", grouped_q2_0(ternary, scale, qtype, base).view(np.int8),
                                 raw_shape=ternary.shape, raw_dtype=Q2_0)
                    continue
                data, rest = quantize_ternary(ternary, scale, TERNARY_TYPES[qtype])
                if qtype in ("i2_s", "q2_0"):  # unknown to the library: the bytes, with the shape they encode
                    w.add_tensor(base + ".weight", data.view(np.int8), raw_shape=ternary.shape,
                                 raw_dtype=TERNARY_TYPES[qtype])
                else:
                    w.add_tensor(base + ".weight", data, raw_dtype=TERNARY_TYPES[qtype])
                if rest != 1.0:
                    w.add_tensor(base + ".scale", np.array([rest], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
