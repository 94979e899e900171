"""Key/value cache with a sliding window: bounded memory on unbounded streams.

Rows are absolute positions ``pos0 .. pos0 + length - 1``; the attention
kernel takes ``pos0`` and masks by window itself. When the buffer is full,
rows that no future query can see (older than ``window - 1`` behind the next
position) are dropped by one memmove; the capacity keeps some slack so that
this happens rarely, and never grows past ``window - 1 + chunk + slack``.

Storage (``dtype``):
- ``"f32"``: exact; the layers write new rows straight into the cache.
- ``"bf16"``: each value rounded to nearest-even bfloat16 (uint16 bits).
- ``"int8"``: symmetric int8 with one float32 scale per (row, KV head),
  ``amax / 127``, kept in ``k_scale``/``v_scale`` beside the rows.
Compact rows are converted once, when written (``store``), and never
re-quantized, so the cache contents (and the tokens) do not depend on how a
stream is chunked.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _kernels as K
from .errors import UsageError

# one per name of modes.KV_DTYPES (checked where options enter: options.py)
_STORAGE = {"f32": np.float32, "bf16": np.uint16, "int8": np.int8}


class KVCache:
    def __init__(
        self,
        n_layers: int,
        row_dim: int,
        window: int,
        initial_rows: int = 256,
        *,
        dtype: str = "f32",
        n_kv_heads: int = 1,
    ):
        if dtype not in _STORAGE:
            raise UsageError(f"kv_cache must be one of {', '.join(_STORAGE)}; got {dtype!r}")
        self.dtype = dtype
        if n_kv_heads < 1 or row_dim % n_kv_heads:
            raise UsageError(f"row_dim {row_dim} is not a multiple of n_kv_heads {n_kv_heads}")
        self.n_layers = n_layers
        self.row_dim = row_dim
        self.n_kv_heads = n_kv_heads
        self.head_dim = row_dim // n_kv_heads
        self.window = window
        self.slack = max(16, window // 4)
        self.capacity = 0
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        # int8 only: one scale per (row, KV head); empty lists otherwise
        self.k_scale: list[np.ndarray] = []
        self.v_scale: list[np.ndarray] = []
        self.pos0 = 0  # absolute position of row 0
        self.length = 0  # valid rows
        self.compactions = 0
        self._resize(max(1, min(initial_rows, window + self.slack)))

    def copy(self) -> KVCache:
        """An independent copy (rows, scales and positions)."""
        new = copy.copy(self)
        new.k, new.v, new.k_scale, new.v_scale = ([a.copy() for a in arrays] for arrays in self._buffers())
        return new

    @property
    def compact(self) -> bool:
        """Rows are stored converted (bf16 / int8), not as the fp32 the layers compute."""
        return self.dtype != "f32"

    @property
    def next_pos(self) -> int:
        return self.pos0 + self.length

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.k, *self.v, *self.k_scale, *self.v_scale))

    def _buffers(self) -> list[list[np.ndarray]]:
        return [self.k, self.v, self.k_scale, self.v_scale]

    def _resize(self, capacity: int) -> None:
        rows = np.dtype(_STORAGE[self.dtype])
        fresh = [[np.empty((capacity, self.row_dim), dtype=rows) for _ in range(self.n_layers)] for _ in range(2)]
        if self.dtype == "int8":
            fresh += [
                [np.empty((capacity, self.n_kv_heads), dtype=np.float32) for _ in range(self.n_layers)]
                for _ in range(2)
            ]
        else:
            fresh += [[], []]
        for old, new in zip(self._buffers(), fresh, strict=True):
            for layer in range(len(old)):
                new[layer][: self.length] = old[layer][: self.length]
        self.k, self.v, self.k_scale, self.v_scale = fresh
        self.capacity = capacity

    def _compact(self) -> None:
        keep = min(self.length, self.window - 1)
        drop = self.length - keep
        if drop <= 0:
            return
        for buffers in self._buffers():  # scales move with their rows
            for a in buffers:
                a[:keep] = a[drop : self.length]
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
        """f32 cache: views where the new rows' keys and values are written."""
        if self.compact:
            raise TypeError(f"a {self.dtype} cache has no fp32 slots; use store()")
        end = self.length + n_new
        return self.k[layer][self.length : end], self.v[layer][self.length : end]

    def store(self, layer: int, k_new: np.ndarray, v_new: np.ndarray) -> None:
        """Put fp32 rows k_new/v_new [n, row_dim] into the next n slots
        (converted for a compact cache; for f32, a no-op when they were
        computed in the slots themselves)."""
        n = k_new.shape[0]
        end = self.length + n
        if not self.compact:
            k_slot, v_slot = self.slots(layer, n)
            for src, dst in ((k_new, k_slot), (v_new, v_slot)):
                if not np.may_share_memory(src, dst):
                    dst[...] = src
            return
        shape = (n, self.n_kv_heads, self.head_dim)
        for src, dst, scale in ((k_new, self.k, self.k_scale), (v_new, self.v, self.v_scale)):
            K.kv_store(
                src.reshape(shape),
                dst[layer][self.length : end].reshape(shape),
                scale[layer][self.length : end] if scale else None,
            )

    def keys_values(self, layer: int, n_new: int) -> tuple[np.ndarray, np.ndarray]:
        """All rows including the ``n_new`` just written."""
        end = self.length + n_new
        return self.k[layer][:end], self.v[layer][:end]

    def scales(self, layer: int, n_new: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """int8: the per-(row, head) scales of all rows incl. the new ones; else (None, None)."""
        if self.dtype != "int8":
            return None, None
        end = self.length + n_new
        return self.k_scale[layer][:end], self.v_scale[layer][:end]

    def commit(self, n_new: int) -> None:
        self.length += n_new

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` committed rows (drafted decoder steps that were
        rejected). They are the newest rows, so the window's older rows, the
        compaction state and the other rows' bits are untouched; the next
        rows are written over them."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot roll back {n} of {self.length} rows")
        self.length -= n
