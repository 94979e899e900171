"""The two transformer sub-layers the encoder and decoder share: causal
sliding-window attention over a KV cache, and the SwiGLU feed-forward. Both
add their result into the residual stream ``x`` in place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .kvcache import KVCache
from .linear import linear


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

    def __call__(self, x, h, cache: KVCache, layer: int, cos, sin, q, attn, wq, wk, wv, wo, bq=None, bv=None, bo=None):
        """x += wo(attention(h)); q/attn are [n, n_heads*head_dim] scratch buffers."""
        n = h.shape[0]
        if cache.compact:  # computed in fp32, converted once into the cache
            row = self.n_kv_heads * self.head_dim
            k_new, v_new = np.empty((n, row), dtype=np.float32), np.empty((n, row), dtype=np.float32)
        else:  # zero-copy: written straight into the cache rows
            k_new, v_new = cache.slots(layer, n)
        linear(h, wq, bq, out=q)
        linear(h, wk, None, out=k_new)
        linear(h, wv, bv, out=v_new)
        self.rotate(q, k_new, cos, sin)
        self.attend(cache, layer, q, k_new, v_new, attn)
        linear(attn, wo, bo, out=x, accumulate=True)

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
        if cache.compact:
            k_scale, v_scale = cache.scales(layer, n)
            K.attention_kv(
                q.reshape(n, nh, hd), keys, values, k_scale, v_scale, out.reshape(n, nh, hd),
                cache.next_pos, cache.pos0, self.window, self.scale,
            )
        else:
            K.attention(
                q.reshape(n, nh, hd), keys, values, out.reshape(n, nh, hd),
                cache.next_pos, cache.pos0, self.window, self.scale,
            )


def swiglu(x, h, w1, w3, w2, b2=None) -> None:
    """x += w2(silu(w1 h) * w3 h) (+ b2)."""
    linear(K.silu_mul(linear(h, w1), linear(h, w3)), w2, b2, out=x, accumulate=True)


def scratch(n: int, attn: Attention) -> tuple[np.ndarray, np.ndarray]:
    width = attn.n_heads * attn.head_dim
    return np.empty((n, width), dtype=np.float32), np.empty((n, width), dtype=np.float32)
