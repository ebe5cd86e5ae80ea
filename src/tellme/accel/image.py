"""The DDR weight image a TeLLMe v2 board loads, and the host's tables; and its reader.

Layout (../shared/TELLME-HARDWARE.md, "Weight buffer"; docs/accel.md works one beat through):
three 256-bit arrays, one per AXI master (HP0, HP1, HP3), each [layers][13 regions][19][308]
32-byte words. The words at one address of the three arrays form one 768-bit beat:

    bits   0..699   five 140-bit index vectors: output rows 5r..5r+4 of one 84-activation block;
                    in each, group g's 5-bit TLMM index at bits 5g..5g+4 (LSB first)
    bits 700..715   one fp16 norm weight (element i of a norm rides in beat i of its linear's load)
    bits 716..767   zero

Regions per layer: q, k, v, o; up, gate by output rows in three slots of 1536; down by reduction
blocks in three slots of 19. Norms: layer 0's q carries its input norm, o the attention sub-norm,
up the post-attention norm, gate the FFN sub-norm, down the next layer's input norm (the last
layer's down: the final norm). q and k rows are in consecutive-pair RoPE order (tellme's packed
order already). Bytes are little-endian: bit j of a word is bit j % 8 of its byte j // 8.

Host files (NumPy .npy, readable by a PYNQ host script): embedding fp16, int8 LM head and its fp32
row scales, RoPE cos/sin fp16 for the KV cache's positions, and the per-linear fp32 scales.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import FormatError, UsageError
from ..kernels.reference import quantize as quantize_rows
from ..packed import PackedModel
from ..rope import rope_tables
from . import numerics as nm
from .design import LINEARS, TELLME_V2, Design, ceil_div

REGIONS = ("q", "k", "v", "o", "up0", "up1", "up2", "gate0", "gate1", "gate2", "down0", "down1", "down2")
PORTS = ("hp0", "hp1", "hp3")
NORM_BIT = 700                   # after five 140-bit index vectors
LAYERS = 24                      # the DDR arrays' first dimension   [C]


def fits(c: ModelConfig, group: int = 0, d: Design = TELLME_V2) -> list[str]:
    """What stops the released design from holding and running `c`, one line each (empty: it fits)."""
    why = []
    k_max = d.slot_blocks * d.block
    want = {"hidden": (c.hidden, 1536), "heads": (c.heads, 16), "kv_heads": (c.kv_heads, 16),
            "head_dim": (c.head_dim, 96)}
    for name, (have, fixed) in want.items():
        if have != fixed:
            why.append(f"{name} {have}: the attention units and the norms are built for {fixed}")
    if c.intermediate > d.slots * d.slot_rows or c.intermediate > d.slots * k_max:
        why.append(f"intermediate {c.intermediate}: up/gate hold {d.slots} x {d.slot_rows} rows, down "
                   f"{d.slots} x {d.slot_blocks} blocks of {d.block}")
    if c.layers > LAYERS:
        why.append(f"layers {c.layers}: the DDR arrays hold {LAYERS}")
    if c.activation != "silu":
        why.append(f"activation {c.activation}: the design has the SiLU table")
    if not c.sub_norms or c.qk_norm:
        why.append("norms: the design has BitNet's sub-norms and no q/k norms")
    if group:
        why.append(f"scales per group of {group}: the design dequantizes with one scale per linear")
    return why


def _slots(name: str, d: Design):
    """(rows, block) ranges of each region of linear `name`."""
    if name in ("up", "gate"):
        return [(range(s * d.slot_rows, (s + 1) * d.slot_rows), range(d.slot_blocks)) for s in range(d.slots)]
    if name == "down":
        return [(range(d.slot_rows), range(s * d.slot_blocks, (s + 1) * d.slot_blocks)) for s in range(d.slots)]
    return [(range(d.slot_rows), range(d.slot_blocks))]


def carried_norm(name: str, layer: int, layers: int) -> tuple[int, str] | None:
    """The norm linear `name` of `layer` carries in its load: (its layer, its name), "final_norm"
    for the last layer's down, or None."""
    if name == "down":
        return (layer + 1, "attn_norm") if layer + 1 < layers else (layer, "final_norm")
    if name == "q":
        return (0, "attn_norm") if layer == 0 else None
    carried = {"o": "attn_sub_norm", "up": "ffn_norm", "gate": "ffn_sub_norm"}.get(name)
    return (layer, carried) if carried else None


def _norm_of(packed: PackedModel, layer: int, name: str) -> np.ndarray | None:
    where = carried_norm(name, layer, packed.config.layers)
    if where is None:
        return None
    return packed.final_norm if where[1] == "final_norm" else packed.norm(*where)


def encode_region(indices: np.ndarray, norm: np.ndarray | None, d: Design = TELLME_V2) -> np.ndarray:
    """indices uint8 [slot_rows, slot_blocks, T] (zero-padded) and up to blocks*beats norm values ->
    beats as bytes [slot_blocks, beats, 96]."""
    beats = ceil_div(d.slot_rows, d.rows_per_beat)
    rows = np.zeros((beats * d.rows_per_beat, d.slot_blocks, d.T), np.uint8)
    rows[:indices.shape[0]] = indices
    v = rows.reshape(beats, d.rows_per_beat, d.slot_blocks, d.T).transpose(2, 0, 1, 3)
    bits = np.zeros((d.slot_blocks, beats, d.beat_bytes * 8), np.uint8)
    bits[..., :NORM_BIT] = ((v[..., None] >> np.arange(d.index_bits, dtype=np.uint8)) & 1).reshape(
        d.slot_blocks, beats, NORM_BIT)
    if norm is not None:
        half = np.zeros(d.slot_blocks * beats, np.uint16)
        half[:len(norm)] = np.asarray(norm, np.float32).astype(np.float16).view(np.uint16)
        bits[..., NORM_BIT:NORM_BIT + 16] = ((half[:, None] >> np.arange(16, dtype=np.uint16)) & 1).reshape(
            d.slot_blocks, beats, 16)
    return np.packbits(bits, axis=-1, bitorder="little")


def decode_region(beats: np.ndarray, d: Design = TELLME_V2) -> tuple[np.ndarray, np.ndarray]:
    """The inverse: (indices [slot_rows rounded to beats, slot_blocks, T], norm fp16 per beat in load order)."""
    bits = np.unpackbits(beats, axis=-1, bitorder="little")
    if bits[..., NORM_BIT + 16:].any():
        raise FormatError("a beat has non-zero bits past the norm weight (bits 716..767 are unused)")
    v = bits[..., :NORM_BIT].reshape(d.slot_blocks, -1, d.rows_per_beat, d.T, d.index_bits)
    idx = (v << np.arange(d.index_bits, dtype=np.uint8)).sum(-1, dtype=np.uint8)
    idx = idx.transpose(1, 2, 0, 3).reshape(-1, d.slot_blocks, d.T)
    norm_bits = bits[..., NORM_BIT:NORM_BIT + 16].reshape(-1, 16).astype(np.uint16)
    return idx, (norm_bits << np.arange(16, dtype=np.uint16)).sum(-1, dtype=np.uint16).view(np.float16)


def write(packed: PackedModel, out_dir: str | os.PathLike, d: Design = TELLME_V2, progress=iter) -> dict:
    """Writes the weight image and the host's tables of `packed` into the directory `out_dir`."""
    c = packed.config
    group = packed.linear(0, "q").group
    why = fits(c, group, d)
    if why:
        raise UsageError(f"{packed.source}: the TeLLMe v2 design cannot hold this model:\n  " + "\n  ".join(why)
                         + "\nIt holds: hidden 1536, 16 heads x 96 (no GQA), intermediate up to 4608, up to 24 "
                           "layers, SiLU, BitNet sub-norms, one scale per linear (bitnet_b1_58-large's shape). "
                           "`tellme accel explore` sizes a design for another model.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    beats = ceil_div(d.slot_rows, d.rows_per_beat)
    files = {p: open(out / f"weights_{p}.bin", "wb") for p in PORTS}
    scales = np.zeros((c.layers, len(LINEARS)), np.float32)
    try:
        for layer in progress(range(c.layers)):
            for j, name in enumerate(LINEARS):
                w = packed.linear(layer, name)
                scales[layer, j] = w.scale
                idx = nm.encode_indices(w.ternary())                       # [out, groups]
                idx = idx.reshape(w.out_features, -1, d.T)                  # [out, blocks, T]
                norm = _norm_of(packed, layer, name)
                for s, (rows, blocks) in enumerate(_slots(name, d)):
                    part = np.zeros((d.slot_rows, d.slot_blocks, d.T), np.uint8)
                    r = idx[rows.start:min(rows.stop, w.out_features), blocks.start:min(blocks.stop, idx.shape[1])]
                    part[:r.shape[0], :r.shape[1]] = r
                    seg = None
                    if norm is not None:
                        per = d.slot_blocks * beats
                        seg = norm[s * per:(s + 1) * per]
                    region = encode_region(part, seg, d)
                    for p, f in enumerate(files.values()):
                        f.write(region[..., 32 * p:32 * (p + 1)].tobytes())
    finally:
        for f in files.values():
            f.close()
    e = packed.rows("embedding").float32()
    np.save(out / "embedding_fp16.npy", e.astype(np.float16))
    head = packed.rows("lm_head")
    rows, row_scale = (head.q, head.row_scale) if head.q is not None else quantize_rows(head.float32())
    np.save(out / "lm_head_int8.npy", rows)
    np.save(out / "lm_head_scale_fp32.npy", np.asarray(row_scale, np.float32))
    cos, sin = rope_tables(c, d.kv_positions)
    np.save(out / "rope_cos_fp16.npy", cos.astype(np.float16))
    np.save(out / "rope_sin_fp16.npy", sin.astype(np.float16))
    np.save(out / "linear_scales_fp32.npy", scales)
    manifest = {"format": "tellme-v2 weight image", "version": 1, "config": json.loads(c.to_json()),
                "layers": c.layers, "regions": list(REGIONS), "linears": list(LINEARS),
                "ports": {p: f"weights_{p}.bin" for p in PORTS},
                "words_per_port": [c.layers, len(REGIONS), d.slot_blocks, beats], "word_bytes": 32,
                "host": {"embedding": "embedding_fp16.npy", "lm_head": "lm_head_int8.npy",
                         "lm_head_scale": "lm_head_scale_fp32.npy", "rope_cos": "rope_cos_fp16.npy",
                         "rope_sin": "rope_sin_fp16.npy", "linear_scales": "linear_scales_fp32.npy"}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def read(image_dir: str | os.PathLike, d: Design = TELLME_V2) -> dict:
    """Decodes an image: {"linears": {(layer, name): ternary int8 [out, in]}, "norms": {(layer, name):
    fp16}, "final_norm", "scales" [layers, 7], "config"}. Bits that must be zero are checked."""
    src = Path(image_dir)
    try:
        manifest = json.loads((src / "manifest.json").read_text())
        c = ModelConfig.from_json(json.dumps(manifest["config"]), str(src))
    except (OSError, ValueError, KeyError) as e:
        raise FormatError(f"{src}: not a tellme-v2 weight image ({e})") from None
    beats = ceil_div(d.slot_rows, d.rows_per_beat)
    shape = (c.layers, len(REGIONS), d.slot_blocks, beats, 32)
    ports = []
    for p in PORTS:
        path = src / f"weights_{p}.bin"
        if not path.exists() or path.stat().st_size != int(np.prod(shape)):
            raise FormatError(f"{path}: expected {int(np.prod(shape))} bytes for {c.layers} layers")
        ports.append(np.fromfile(path, np.uint8).reshape(shape))
    words = np.concatenate(ports, axis=-1)                          # [layers, 13, 19, 308, 96]
    linears, norms = {}, {}
    final = None
    for layer in range(c.layers):
        r = 0
        for name in LINEARS:
            out, k = c.linear_shape(name)
            slots = _slots(name, d)
            idx = np.zeros((len(slots) * d.slot_rows, 3 * d.slot_blocks, d.T), np.uint8)
            norm = []
            for rows, blocks in slots:
                part, nrm = decode_region(words[layer, r], d)
                r += 1
                idx[rows.start:rows.stop, blocks.start:blocks.stop] = part[:d.slot_rows]
                norm.append(nrm)
            nb = ceil_div(k, d.block)
            if idx[out:].any() or idx[:, nb:].any():
                raise FormatError(f"{src}: layer {layer} {name} has indices outside its {out} x {k} matrix")
            linears[layer, name] = nm.decode_indices(idx[:out, :nb].reshape(out, -1), k)
            where = carried_norm(name, layer, c.layers)
            if where is None:
                continue
            norm = np.concatenate(norm)
            if where[1] == "final_norm":
                final = norm[:c.hidden]
            else:
                norms[where] = norm[:c.norm_dim(where[1])]
    scales = np.load(src / "linear_scales_fp32.npy")
    return {"config": c, "linears": linears, "norms": norms, "final_norm": final, "scales": scales}
