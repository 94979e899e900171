"""Text decoder: GQA transformer with RoPE, a sliding-window KV cache, the
delay-conditioned adaptive norm and the tied LM head."""

from __future__ import annotations

import math

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .kvcache import KVCache, check_kv_dtype
from .linear import embedding_rows, linear
from .layers import Attention, scratch, swiglu
from .rope import RotaryTables
from .weights import Weights


def time_embedding(t: float, dim: int, theta: float = 10000.0) -> np.ndarray:
    """Sinusoidal embedding of the delay, float32 as in the reference: [cos(t f), sin(t f)]."""
    half = dim // 2
    inv_freq = np.exp(np.float32(-math.log(theta)) * np.arange(half, dtype=np.float32) / np.float32(half)).astype(
        np.float32
    )
    angles = np.float32(t) * inv_freq
    return np.concatenate([np.cos(angles), np.sin(angles)]).astype(np.float32)


class TextDecoder:
    def __init__(self, cfg: ModelConfig, w: Weights, kv_cache: str = "f32"):
        self.cfg = cfg
        self.kv_cache = check_kv_dtype(kv_cache)  # storage of new_cache() (see kvcache.py)
        self.w = w
        d = cfg.decoder
        self.rope = RotaryTables(d.head_dim, d.rope_theta)
        self.attn = Attention(d.n_heads, d.n_kv_heads, d.head_dim, d.sliding_window, cfg.rope_style == "interleaved")
        self._ada_cache: dict[int, np.ndarray] = {}

    def new_cache(self, dtype: str | None = None) -> KVCache:
        """A fresh cache stored as ``dtype`` (default: the model's ``kv_cache``)."""
        d = self.cfg.decoder
        return KVCache(d.n_layers, d.n_kv_heads * d.head_dim, d.sliding_window, initial_rows=128,
                       dtype=self.kv_cache if dtype is None else dtype, n_kv_heads=d.n_kv_heads)

    def ada_scales(self, n_delay_tokens: int) -> np.ndarray:
        """Per-layer FFN-norm multipliers 1 + up(gelu(down(t_cond))): [n_layers, dim]."""
        got = self._ada_cache.get(n_delay_tokens)
        if got is None:
            t_cond = time_embedding(float(n_delay_tokens), self.cfg.decoder.dim)[None, :]
            rows = []
            for lw in self.w.decoder_layers:
                hidden = K.gelu(K.matmul_bf16(t_cond, lw.ada_down))
                rows.append(1.0 + K.matmul_bf16(hidden, lw.ada_up)[0])
            got = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
            self._ada_cache[n_delay_tokens] = got
        return got

    def embed(self, token_ids) -> np.ndarray:
        return embedding_rows(self.w.tok_embeddings, token_ids)

    def forward(self, cache: KVCache, x: np.ndarray, ada: np.ndarray) -> np.ndarray:
        """Run positions cache.next_pos .. +n with inputs x [n, dim] (modified in
        place); returns the final-normed hidden state of the LAST position [1, dim]."""
        d = self.cfg.decoder
        n = x.shape[0]
        cache.reserve(n)
        cos, sin = self.rope(cache.next_pos, n)
        q, attn = scratch(n, self.attn)
        for i, lw in enumerate(self.w.decoder_layers):
            h = K.rms_norm(x, lw.attn_norm, d.norm_eps)
            self.attn(x, h, cache, i, cos, sin, q, attn, lw.wq, lw.wk, lw.wv, lw.wo)
            h = K.rms_norm(x, lw.ffn_norm, d.norm_eps)
            h *= ada[i]  # delay conditioning
            swiglu(x, h, lw.w1, lw.w3, lw.w2)
        cache.commit(n)
        return K.rms_norm(np.ascontiguousarray(x[-1:]), self.w.decoder_norm, d.norm_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return linear(hidden, self.w.tok_embeddings)
