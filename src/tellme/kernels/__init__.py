"""Ternary matmul kernels: activation quantization, weight packing and the matmul itself.

    >>> w = TernaryWeights.pack(ternary_int8_matrix, scale=0.02)      # kernel picked for the shape
    >>> q, s = quantize(x)                                             # int8 activations + scales
    >>> y = w.matmul(q, s)                                             # float32 [tokens, out]

The NumPy references in `tellme.kernels.reference` define what every function computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _core
from ..errors import UsageError
from . import layout

KERNELS = ("tlmm", "i2")


def quantize(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8 quantization: (q int8 [tokens, k], scale float32 [tokens])."""
    return _core.quantize(_activations(x, "x"))


def rmsnorm_quantize(x, gamma, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """RMSNorm(x) * gamma, then absmax int8 quantization, in one pass per token."""
    return _core.rmsnorm_quantize(_activations(x, "x"), np.ascontiguousarray(gamma, dtype=np.float32), float(eps))


def _activations(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise UsageError(f"{name} must be 2-D [tokens, features], got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def absmean_ternary(w) -> tuple[np.ndarray, float]:
    """BitNet b1.58 weight quantization: scale = max(mean|w|, 1e-5), t = clip(round(w / scale), -1, 1).

    Returns (t int8, scale) with w ~= t * scale.
    """
    w = np.asarray(w, dtype=np.float32)
    scale = max(float(np.abs(w).mean()), 1e-5)
    return np.clip(np.rint(w / np.float32(scale)), -1, 1).astype(np.int8), scale


# The kernel used when none is named: the 2-bit multiply-add kernel, on every ISA and shape.
# Measured (docs/kernels.md): it wins every 128-token GEMM and every GEMV but a few AVX2 ones, where
# TLMM is at most about 20% ahead; a model keeps one layout per matrix for prefill and decode, so
# the default is the kernel that never loses badly. kernel="tlmm" selects TLMM.
DEFAULT_KERNEL = "i2"


@dataclass(frozen=True)
class TernaryWeights:
    """A ternary matrix W ~= scale * T (T in {-1, 0, 1}, [out, in]) packed for one kernel, or, with
    group scales (i2 only), W[r, k] = group_scale[r, k // group] * T[r, k] and scale 1."""

    kernel: str
    out_features: int
    in_features: int
    scale: float
    data: np.ndarray                 # tiles (tlmm) or codes (i2)
    neg_count: np.ndarray | None     # tlmm only
    group_scale: np.ndarray | None = None  # float32 [out rounded up to 32 rows, in / group]

    @property
    def group(self) -> int:
        """Weights per group scale along a row (0: one scale for the matrix)."""
        return 0 if self.group_scale is None else self.in_features // self.group_scale.shape[1]

    @classmethod
    def pack(cls, ternary, scale=1.0, kernel: str = "auto") -> "TernaryWeights":
        """scale: one number, or float32 [out, in / group] group scales (a multiple of 32 weights
        per group; the i2 kernel)."""
        t = layout.check_ternary(ternary)
        if kernel == "auto":
            kernel = DEFAULT_KERNEL
        if kernel not in KERNELS:
            raise UsageError(f"unknown kernel {kernel!r}; expected 'auto' or one of {', '.join(KERNELS)}")
        if np.ndim(scale):
            return cls._pack_grouped(t, np.asarray(scale), kernel)
        if not np.isfinite(scale):
            raise UsageError(f"weight scale must be finite, got {scale!r}")
        if kernel == "tlmm":
            tiles, neg = layout.pack_tlmm(t)
            return cls("tlmm", t.shape[0], t.shape[1], float(scale), tiles, neg)
        return cls("i2", t.shape[0], t.shape[1], float(scale), layout.pack_i2(t), None)

    @classmethod
    def _pack_grouped(cls, t: np.ndarray, scales: np.ndarray, kernel: str) -> "TernaryWeights":
        out_f, in_f = t.shape
        if kernel != "i2":
            raise UsageError("group scales run on the i2 kernel only")
        if scales.ndim != 2 or scales.shape[0] != out_f or not scales.shape[1] or in_f % scales.shape[1] \
                or (in_f // scales.shape[1]) % 32:
            raise UsageError(f"group scales of shape {scales.shape} do not fit a {out_f}x{in_f} matrix in groups "
                             "of a multiple of 32 weights")
        if not np.isfinite(scales).all():
            raise UsageError("group scales must be finite")
        padded = np.zeros((layout.round_up(out_f, layout.ROW_BLOCK), scales.shape[1]), np.float32)
        padded[:out_f] = scales
        return cls("i2", out_f, in_f, 1.0, layout.pack_i2(t), None, padded)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + sum(a.nbytes for a in (self.neg_count, self.group_scale) if a is not None)

    @property
    def bits_per_weight(self) -> float:
        """Packed bytes (padding and per-row data included) per real weight, in bits."""
        return 8.0 * self.nbytes / (self.out_features * self.in_features)

    def ternary(self) -> np.ndarray:
        """The unpacked int8 [out, in] matrix (exact)."""
        if self.kernel == "tlmm":
            return layout.unpack_tlmm(self.data, self.out_features, self.in_features)
        return layout.unpack_i2(self.data, self.out_features, self.in_features)

    def matmul_int(self, q: np.ndarray) -> np.ndarray:
        """Exact int32 [tokens, out] = q @ T.T for int8 activations q [tokens, in]."""
        if self.group_scale is not None:
            raise UsageError("grouped weights have no single integer result per row; use matmul")
        if self.kernel == "tlmm":
            return _core.tlmm_matmul_int(self.data, self.neg_count, self.out_features, self.in_features, q)
        return _core.i2_matmul_int(self.data, self.out_features, self.in_features, q)

    def matmul(self, q: np.ndarray, act_scale: np.ndarray) -> np.ndarray:
        """float32 [tokens, out] = (q @ T.T) * act_scale[t] * scale (grouped: reference.grouped_matmul)."""
        if self.group_scale is not None:
            return _core.i2_matmul_grouped(self.data, self.group_scale, self.group, self.out_features,
                                           self.in_features, q, act_scale)
        if self.kernel == "tlmm":
            return _core.tlmm_matmul(self.data, self.neg_count, self.out_features, self.in_features, q,
                                   act_scale, self.scale)
        return _core.i2_matmul(self.data, self.out_features, self.in_features, q, act_scale, self.scale)

    def __call__(self, x) -> np.ndarray:
        """float32 activations [tokens, in] -> float32 [tokens, out], quantizing x per token."""
        return self.matmul(*quantize(x))


__all__ = ["DEFAULT_KERNEL", "KERNELS", "TernaryWeights", "absmean_ternary", "quantize", "rmsnorm_quantize"]
