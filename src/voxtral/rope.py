"""Rotary position tables, computed in float32 exactly as the reference does
(angle = float32(position) * float32(inv_freq)), so that long streams see the
same rounding of the angle as the model saw in training/reference."""

from __future__ import annotations

import numpy as np


class RotaryTables:
    def __init__(self, head_dim: int, theta: float):
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        self.inv_freq = (np.float32(1.0) / np.power(np.float32(theta), exponents, dtype=np.float32)).astype(np.float32)

    def __call__(self, pos0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin of shape [n, head_dim // 2] for positions pos0 .. pos0 + n - 1."""
        positions = np.arange(pos0, pos0 + n, dtype=np.int64).astype(np.float32)
        angles = positions[:, None] * self.inv_freq[None, :]
        return np.ascontiguousarray(np.cos(angles)), np.ascontiguousarray(np.sin(angles))
