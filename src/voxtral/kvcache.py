"""Key/value cache with a sliding window: bounded memory on unbounded streams.

Rows are absolute positions ``pos0 .. pos0 + length - 1``; the attention
kernel takes ``pos0`` and masks by window itself. When the buffer is full,
rows that no future query can see (older than ``window - 1`` behind the next
position) are dropped by one memmove; the capacity keeps some slack so that
this happens rarely, and never grows past ``window - 1 + chunk + slack``.
"""

from __future__ import annotations

import numpy as np


class KVCache:
    def __init__(self, n_layers: int, row_dim: int, window: int, initial_rows: int = 256):
        self.n_layers = n_layers
        self.row_dim = row_dim
        self.window = window
        self.slack = max(16, window // 4)
        self.capacity = 0
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.pos0 = 0  # absolute position of row 0
        self.length = 0  # valid rows
        self.compactions = 0
        self._resize(max(1, min(initial_rows, window + self.slack)))

    @property
    def next_pos(self) -> int:
        return self.pos0 + self.length

    def _resize(self, capacity: int) -> None:
        k = [np.empty((capacity, self.row_dim), dtype=np.float32) for _ in range(self.n_layers)]
        v = [np.empty((capacity, self.row_dim), dtype=np.float32) for _ in range(self.n_layers)]
        for layer in range(len(self.k)):
            k[layer][: self.length] = self.k[layer][: self.length]
            v[layer][: self.length] = self.v[layer][: self.length]
        self.k, self.v, self.capacity = k, v, capacity

    def _compact(self) -> None:
        keep = min(self.length, self.window - 1)
        drop = self.length - keep
        if drop <= 0:
            return
        for layer in range(self.n_layers):
            self.k[layer][:keep] = self.k[layer][drop : self.length]
            self.v[layer][:keep] = self.v[layer][drop : self.length]
        self.pos0 += drop
        self.length = keep
        self.compactions += 1

    def reserve(self, n_new: int) -> None:
        """Make room for ``n_new`` rows at the end (call once per step, before the layers)."""
        if self.length + n_new <= self.capacity:
            return
        self._compact()
        need = self.length + n_new
        if self.length >= self.window - 1:
            # The window is full: keep slack so that the memmove happens once
            # per `slack` steps, not on every step.
            need += self.slack
        if need > self.capacity:
            bound = self.window - 1 + n_new + self.slack
            self._resize(max(need, min(2 * self.capacity, bound)))

    def slots(self, layer: int, n_new: int) -> tuple[np.ndarray, np.ndarray]:
        """Views where the new rows' keys and values are written."""
        end = self.length + n_new
        return self.k[layer][self.length : end], self.v[layer][self.length : end]

    def keys_values(self, layer: int, n_new: int) -> tuple[np.ndarray, np.ndarray]:
        """All rows including the ``n_new`` just written."""
        end = self.length + n_new
        return self.k[layer][:end], self.v[layer][:end]

    def commit(self, n_new: int) -> None:
        self.length += n_new
