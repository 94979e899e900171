"""Quantized weight matrices in GGML's standard block layouts.

A ``QuantMatrix`` is a [rows, cols] matrix stored row by row as GGML blocks
(the bytes a GGUF file holds for that tensor), kept as a zero-copy uint8 view
of the mapped file. The kernels in ``_kernels.matmul_q`` read these blocks
directly; ``dequantize`` is the numpy reference used for embedding lookups
and tests.

Block layouts (bit-compatible with ggml):
- q8_0: 32 weights per block: fp16 scale d, 32 x int8 q; w = d * q.
- q4_0: 32 weights per block: fp16 scale d, 16 bytes of nibbles (low
  nibbles are weights 0..15, high nibbles 16..31); w = d * (q - 8).
- q4_k: 256 weights per super-block: fp16 d, fp16 dmin, 12 bytes of 6-bit
  sub-block scales/mins (8 sub-blocks of 32), 128 bytes of nibbles;
  w = d * sc_j * q - dmin * m_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# qtype -> (weights per block, bytes per block)
BLOCK = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_k": (256, 144)}
QTYPES = tuple(BLOCK)


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

    def rows_f32(self, ids) -> np.ndarray:
        """Dequantized rows ``ids`` as float32 [len(ids), cols]."""
        return dequantize(self.data[np.asarray(ids, dtype=np.int64)], self.qtype, self.cols)


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    return blocks[:, offset : offset + 2].copy().view(np.float16).astype(np.float32)


def dequantize(data: np.ndarray, qtype: str, cols: int) -> np.ndarray:
    """GGML blocks [rows, row_bytes] -> float32 [rows, cols]."""
    per, nbytes = BLOCK[qtype]
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
