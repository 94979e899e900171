"""The two transformer sub-layers the encoder and decoder share: causal
sliding-window attention over KV caches, and the SwiGLU feed-forward. Both
add their result into the residual stream ``x`` in place.

A forward pass runs over a batch of spans: consecutive rows of ``x`` that
belong to one sequence (one KV cache, consecutive positions). The weight
products run once over all rows (the kernels are row-deterministic: a row's
result does not depend on the other rows), the attention of each span over
its own cache; so a sequence gets the same bits alone or in any batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .kvcache import KVCache
from .linear import linear, linear_many
from .rope import RotaryTables


@dataclass(frozen=True)
class Span:
    """Rows ``start .. stop - 1`` of a batch: the next positions of ``cache``."""

    cache: KVCache
    start: int
    stop: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def n(self) -> int:
        return self.stop - self.start


class Batch:
    """The spans of one forward pass: reserves each cache's rows and builds
    the RoPE tables of the stacked rows (per span, from its own positions);
    ``commit()`` once the layers have run."""

    def __init__(self, caches: list[KVCache], counts: list[int], rope: RotaryTables):
        self.spans: list[Span] = []
        cos, sin = [], []
        start = 0
        for cache, n in zip(caches, counts, strict=True):
            cache.reserve(n)
            c, s = rope(cache.next_pos, n)
            cos.append(c)
            sin.append(s)
            self.spans.append(Span(cache, start, start + n))
            start += n
        self.rows = start
        one = len(self.spans) == 1
        self.cos = cos[0] if one else np.ascontiguousarray(np.concatenate(cos))
        self.sin = sin[0] if one else np.ascontiguousarray(np.concatenate(sin))

    def commit(self) -> None:
        for sp in self.spans:
            sp.cache.commit(sp.n)


@dataclass(frozen=True)
class Attention:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    window: int
    interleaved: bool  # RoPE pairing: (2i, 2i+1) native, (i, i+D/2) HF

    @property
    def scale(self) -> float:
        return float(self.head_dim) ** -0.5

    def __call__(self, x, h, batch: Batch, layer: int, lw) -> None:
        """x += wo(attention(h)) for every span of ``batch``; ``lw``: the
        layer's weights (wq, wk, wv, wo and optional biases bq, bv, bo)."""
        bq, bv, bo = getattr(lw, "bq", None), getattr(lw, "bv", None), getattr(lw, "bo", None)
        q, k, v = linear_many(h, (lw.wq, lw.wk, lw.wv), (bq, None, bv))
        self.rotate(q, k, batch.cos, batch.sin)
        attn = np.empty_like(q)
        for sp in batch.spans:
            rows = sp.rows
            self.attend(sp.cache, layer, q[rows], k[rows], v[rows], attn[rows])
        linear(attn, lw.wo, bo, out=x, accumulate=True)

    def rotate(self, q, k, cos, sin) -> None:
        """RoPE on the query and key rows [n, heads*head_dim], in place."""
        n = q.shape[0]
        K.rope(q.reshape(n, self.n_heads, self.head_dim), cos, sin, self.interleaved)
        K.rope(k.reshape(n, self.n_kv_heads, self.head_dim), cos, sin, self.interleaved)

    def attend(self, cache: KVCache, layer: int, q, k_new, v_new, out) -> None:
        """Store the new rows' keys/values in ``cache`` and attend the rotated
        queries q [n, heads*head_dim] over it into ``out`` (same shape)."""
        n = q.shape[0]
        hd, nh, nkv = self.head_dim, self.n_heads, self.n_kv_heads
        cache.store(layer, k_new, v_new)
        keys, values = cache.keys_values(layer, n)
        keys, values = keys.reshape(-1, nkv, hd), values.reshape(-1, nkv, hd)
        q, out = np.ascontiguousarray(q).reshape(n, nh, hd), out.reshape(n, nh, hd)
        if cache.compact:
            k_scale, v_scale = cache.scales(layer, n)
            K.attention_kv(q, keys, values, k_scale, v_scale, out, cache.next_pos, cache.pos0, self.window, self.scale)
        else:
            K.attention(q, keys, values, out, cache.next_pos, cache.pos0, self.window, self.scale)


def swiglu(x, h, w1, w3, w2, b2=None) -> None:
    """x += w2(silu(w1 h) * w3 h) (+ b2)."""
    gate, up = linear_many(h, (w1, w3))
    linear(K.silu_mul(gate, up), w2, b2, out=x, accumulate=True)
