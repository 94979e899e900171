"""Quantized weight matrices in GGML's standard block layouts.

A ``QuantMatrix`` is a [rows, cols] matrix stored row by row as GGML blocks
(the bytes a GGUF file holds for that tensor), kept as a zero-copy uint8 view
of the mapped file. The kernels in ``_kernels.matmul_q`` read these blocks
directly; ``repacked`` adds the load-time interleaved copy (8 rows' blocks
side by side, csrc/qpack.c) that ``_kernels.matmul_qp`` reads instead, for
the types and CPUs that have SIMD kernels over it. ``dequantize`` is the
numpy reference used for embedding lookups and tests; ``quantize`` makes
the blocks from float32 rows (the numpy reference; ``python -m voxtral
quantize`` runs the C quantizer, ``_kernels.quantize_rows``, which tests
hold against it and against gguf).

Block layouts (bit-compatible with ggml):
- q8_0: 32 weights per block: fp16 scale d, 32 x int8 q; w = d * q.
- q4_0: 32 weights per block: fp16 scale d, 16 bytes of nibbles (low
  nibbles are weights 0..15, high nibbles 16..31); w = d * (q - 8).
- q4_k: 256 weights per super-block: fp16 d, fp16 dmin, 12 bytes of 6-bit
  sub-block scales/mins (8 sub-blocks of 32), 128 bytes of nibbles;
  w = d * sc_j * q - dmin * m_j.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import _kernels
from .modes import QTYPES

# qtype -> (weights per block, bytes per block), from the C kernel table
BLOCK = {name: (per, nbytes) for name, (_, per, nbytes, _) in _kernels.qtypes().items()}
assert tuple(BLOCK) == QTYPES, "modes.QTYPES (importable without the extension) must list the C table's types"

# quantize() works on about this many weights at a time (bounded temporaries).
_CHUNK_WEIGHTS = 1 << 18


def row_bytes(qtype: str, cols: int) -> int:
    per, nbytes = BLOCK[qtype]
    if cols % per:
        raise ValueError(f"{qtype} needs a row length that is a multiple of {per}, got {cols}")
    return cols // per * nbytes


@dataclass(frozen=True)
class QuantMatrix:
    qtype: str
    data: np.ndarray  # uint8 [rows, row_bytes(qtype, cols)]
    rows: int
    cols: int
    # the interleaved copy (uint8 1-D, _kernels.repack_q) the products use when present
    packed: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.qtype not in BLOCK:
            raise ValueError(f"unknown quantization type {self.qtype!r} (known: {', '.join(QTYPES)})")
        want = (self.rows, row_bytes(self.qtype, self.cols))
        if self.data.dtype != np.uint8 or self.data.shape != want:
            raise ValueError(f"{self.qtype} data must be uint8 {want}, got {self.data.dtype} {self.data.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def repacked(self) -> QuantMatrix:
        """This matrix with its interleaved copy, where the active CPU level has
        SIMD kernels for it (``self`` otherwise: the GGML kernels serve)."""
        if self.packed is not None or self.qtype not in _kernels.repacked_qtypes() or _kernels.qp_kernels() == "scalar":
            return self
        return replace(self, packed=_kernels.repack_q(self.data, self.qtype, self.cols))

    def rows_f32(self, ids) -> np.ndarray:
        """Dequantized rows ``ids`` as float32 [len(ids), cols]."""
        return dequantize(self.data[np.asarray(ids, dtype=np.int64)], self.qtype, self.cols)


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    return blocks[:, offset : offset + 2].copy().view(np.float16).astype(np.float32)


def dequantize(data: np.ndarray, qtype: str, cols: int) -> np.ndarray:
    """GGML blocks [rows, row_bytes] -> float32 [rows, cols]."""
    _, nbytes = BLOCK[qtype]
    rows = data.shape[0]
    blocks = np.ascontiguousarray(data).reshape(-1, nbytes)
    if qtype == "q8_0":
        d = _f16(blocks, 0)
        w = d * blocks[:, 2:].view(np.int8).astype(np.float32)
    elif qtype == "q4_0":
        d = _f16(blocks, 0)
        qs = blocks[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
        w = d * q
    elif qtype == "q4_k":
        d, dmin = _f16(blocks, 0), _f16(blocks, 2)
        sc, mn = _q4k_scales_mins(blocks[:, 4:16])
        qs = blocks[:, 16:].reshape(-1, 4, 32)  # 4 chunks of 64 weights
        q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
        w = (d[:, :, None] * sc[:, :, None]) * q - (dmin[:, :, None] * mn[:, :, None])
    else:
        raise ValueError(f"unknown quantization type {qtype!r}")
    return w.reshape(rows, cols).astype(np.float32)


def _q4k_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12-byte 6-bit scales/mins of q4_k super-blocks -> two [n, 8] float32 arrays."""
    s = s.astype(np.uint8)
    sc = np.empty((s.shape[0], 8), dtype=np.uint8)
    mn = np.empty((s.shape[0], 8), dtype=np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


# ---------------------------------------------------------------------------
# Quantization


def bits_per_weight(qtype: str) -> float:
    per, nbytes = BLOCK[qtype]
    return nbytes * 8 / per


def quantize(arr: np.ndarray, qtype: str) -> np.ndarray:
    """float32 [rows, cols] -> GGML blocks uint8 [rows, row_bytes(qtype, cols)].

    q8_0 and q4_0 follow ggml's reference quantizers bit for bit (the same
    float32 arithmetic and rounding); q4_k fits a scale and a min per 32
    weights by weighted least squares. Rows are processed in chunks, so the
    temporaries stay near ``_CHUNK_WEIGHTS`` floats whatever the matrix size.
    Raises ValueError for non-finite input or values whose block scale does
    not fit fp16."""
    if qtype not in BLOCK:
        raise ValueError(f"unknown quantization type {qtype!r} (known: {', '.join(QTYPES)})")
    if arr.ndim != 2:
        raise ValueError(f"quantize needs a 2-D matrix, got shape {arr.shape}")
    rows, cols = arr.shape
    out = np.empty((rows, row_bytes(qtype, cols)), dtype=np.uint8)
    step = max(1, _CHUNK_WEIGHTS // max(cols, 1))
    for r0 in range(0, rows, step):
        chunk = np.asarray(arr[r0 : r0 + step], dtype=np.float32)
        out[r0 : r0 + step] = quantize_chunk(chunk, qtype)
    return out


def quantize_chunk(chunk: np.ndarray, qtype: str) -> np.ndarray:
    """One chunk of rows, float32 [n, cols] -> uint8 [n, row_bytes] (no chunking)."""
    n, cols = chunk.shape
    per, _ = BLOCK[qtype]
    row_bytes(qtype, cols)  # validates the row length
    if not np.all(np.isfinite(chunk)):
        raise ValueError("cannot quantize NaN or Inf values")
    x = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1, per)
    blocks = {"q8_0": _q8_0_blocks, "q4_0": _q4_0_blocks, "q4_k": _q4_k_blocks}[qtype](x)
    return blocks.reshape(n, -1)


def _fp16_bytes(v: np.ndarray, qtype: str) -> np.ndarray:
    """float32 [n] -> fp16 (round to nearest even, as ggml) as uint8 [n, 2]."""
    with np.errstate(over="ignore"):
        h = v.astype(np.float16)
    if not np.all(np.isfinite(h)):
        raise ValueError(f"values too large for {qtype}: a block scale overflows fp16")
    return h.view(np.uint8).reshape(-1, 2)


def _inverse(d: np.ndarray, num: float = 1.0) -> np.ndarray:
    """num/d in float32 as ggml computes it, 0 where d is 0. A subnormal d (a
    block of values below ~1e-36) has no finite inverse: such a block is
    quantized as zeros (its fp16 scale is 0 anyway), where ggml's C code
    would cast Inf to an integer."""
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(num) / np.where(d == 0, np.float32(1), d)
    return np.where((d == 0) | ~np.isfinite(inv), np.float32(0), inv).astype(np.float32)


def _q8_0_blocks(x: np.ndarray) -> np.ndarray:
    # ggml: d = amax / 127, q = roundf(x / d), with x * (1/d) in float32.
    d = np.abs(x).max(axis=1) / np.float32(127)
    inv = _inverse(d)
    # floor(|v| + 0.5) in float32 differs from roundf for |v| just below .5
    # (0.49999997 + 0.5 rounds up to 1), so take the fractional part explicitly.
    v = x * inv[:, None]
    a = np.abs(v)
    fl = np.floor(a)
    q = np.copysign(fl + (a - fl >= np.float32(0.5)), v)
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(d, "q8_0")
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out


def _q4_0_blocks(x: np.ndarray) -> np.ndarray:
    # ggml: the signed value of largest magnitude maps to -8, so d = max / -8
    # and q = min(15, (int)(x / d + 8.5)).
    idx = np.abs(x).argmax(axis=1)
    signed_max = x[np.arange(x.shape[0]), idx]
    d = signed_max / np.float32(-8)
    inv = _inverse(d)
    q = np.trunc(x * inv[:, None] + np.float32(8.5)).clip(0, 15).astype(np.uint8)
    out = np.empty((x.shape[0], 18), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(d, "q4_0")
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)  # weights 0..15 low nibbles, 16..31 high
    return out


# q4_k scale search: candidate inverse scales (15 + _Q4K_RMIN + _Q4K_RDELTA * i) / (max - min)
# for i in 0.._Q4K_NSTEP, each followed by a weighted least-squares fit of
# (scale, min) to the levels it picks; the fit with the least weighted error wins.
_Q4K_RMIN, _Q4K_RDELTA, _Q4K_NSTEP = -1.0, 0.1, 20


def _fit_scale_min(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of x [n, 32] (weights w): scale >= 0 and offset m >= 0 such that
    x ~ scale * q - m with q in 0..15, minimizing sum w (scale q - m - x)^2."""
    lo = np.minimum(x.min(axis=1), 0.0)  # the min is never positive: offsets are stored as -min >= 0
    hi = x.max(axis=1)
    span = hi - lo
    # A range far below what fp16 scales can hold (or none) is stored as scale 0.
    flat = span < np.float32(1e-30)
    span = np.where(flat, 1.0, span).astype(np.float32)
    xc = x - lo[:, None]
    # Row sums in float64: the error is expanded from them, which cancels.
    sum_w = w.sum(axis=1).astype(np.float64)
    sum_x = np.einsum("ij,ij->i", w, x).astype(np.float64)
    sum_x2 = np.einsum("ij,ij->i", w * x, x).astype(np.float64)

    def level_sums(inv_scale):
        q = np.rint(inv_scale[:, None] * xc)
        np.clip(q, 0, 15, out=q)
        wq = w * q
        return (
            wq.sum(axis=1).astype(np.float64),
            np.einsum("ij,ij->i", wq, q).astype(np.float64),
            np.einsum("ij,ij->i", wq, x).astype(np.float64),
        )

    def error(scale, mn, sum_l, sum_l2, sum_xl):
        # sum w (scale q + mn - x)^2, expanded
        return (
            scale * scale * sum_l2
            + mn * mn * sum_w
            + sum_x2
            - 2 * scale * sum_xl
            + 2 * scale * mn * sum_l
            - 2 * mn * sum_x
        )

    # Start: the plain min/max grid.
    best_scale = (span / np.float32(15)).astype(np.float64)
    best_min = lo.astype(np.float64)
    best_err = error(best_scale, best_min, *level_sums(np.float32(15) / span))
    for i in range(_Q4K_NSTEP + 1):
        sum_l, sum_l2, sum_xl = level_sums(np.float32(15 + _Q4K_RMIN + _Q4K_RDELTA * i) / span)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe_det = np.where(ok, det, 1.0)
        scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        mn = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        # A positive min cannot be stored: refit the scale alone with min = 0.
        pos = mn > 0
        scale = np.where(pos, sum_xl / np.where(sum_l2 > 0, sum_l2, 1.0), scale)
        mn = np.where(pos, 0.0, mn)
        err = error(scale, mn, sum_l, sum_l2, sum_xl)
        better = ok & (err < best_err) & (scale >= 0)
        best_scale = np.where(better, scale, best_scale)
        best_min = np.where(better, mn, best_min)
        best_err = np.where(better, err, best_err)
    best_scale = np.where(flat, 0.0, best_scale)
    return best_scale.astype(np.float32), (-best_min).astype(np.float32)


def _q4_k_blocks(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]  # super-blocks of 256
    sub = x.reshape(n * 8, 32)
    # Weights of the fit (as llama.cpp): the super-block's RMS plus |x|, so
    # large values, which dominate the matmul, are reproduced more closely.
    rms = np.sqrt((x * x).mean(axis=1, dtype=np.float32))
    w = np.repeat(rms, 8)[:, None] + np.abs(sub)
    scale, offset = _fit_scale_min(sub, w)
    scale, offset = scale.reshape(n, 8), offset.reshape(n, 8)

    # 6-bit sub-block scales and offsets against the super-block's fp16 d, dmin.
    max_scale, max_offset = scale.max(axis=1), offset.max(axis=1)
    d_bytes = _fp16_bytes(max_scale / np.float32(63), "q4_k")
    dmin_bytes = _fp16_bytes(max_offset / np.float32(63), "q4_k")
    inv_s, inv_m = _inverse(max_scale, 63.0), _inverse(max_offset, 63.0)
    sc = np.clip(np.rint(scale * inv_s[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(offset * inv_m[:, None]), 0, 63).astype(np.uint8)

    # Levels against the scales as stored, so that dequantization sees what we fitted.
    d = d_bytes.copy().view(np.float16).astype(np.float32)  # [n, 1]
    dmin = dmin_bytes.copy().view(np.float16).astype(np.float32)
    step = d * sc  # [n, 8]
    shift = dmin * mn
    safe = np.where(step > 0, step, 1.0)
    q = np.rint((x.reshape(n, 8, 32) + shift[:, :, None]) / safe[:, :, None])
    q = np.where(step[:, :, None] > 0, np.clip(q, 0, 15), 0).astype(np.uint8)

    out = np.empty((n, 144), dtype=np.uint8)
    out[:, 0:2] = d_bytes
    out[:, 2:4] = dmin_bytes
    out[:, 4:8] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    out[:, 8:12] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    out[:, 12:16] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    pairs = q.reshape(n, 4, 2, 32)  # 64 weights per 32 bytes: sub-block 2c low nibbles, 2c+1 high
    out[:, 16:] = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(n, 128)
    return out
