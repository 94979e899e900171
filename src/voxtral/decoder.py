"""Text decoder: GQA transformer with RoPE, a sliding-window KV cache, the
delay-conditioned adaptive norm and the tied LM head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .kvcache import KVCache
from .layers import Attention, Batch, swiglu
from .linear import embedding_rows, linear
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


@dataclass
class DecoderRows:
    """One sequence's part of a decoder pass: inputs ``x`` [n, dim] at the
    positions ``cache.next_pos ..``, its delay conditioning ``ada``
    [n_layers, dim], and how many of its last rows' outputs are wanted."""

    cache: KVCache
    x: np.ndarray
    ada: np.ndarray
    n_out: int = 1


class TextDecoder:
    def __init__(self, cfg: ModelConfig, w: Weights):
        self.cfg = cfg
        self.w = w
        d = cfg.decoder
        self.rope = RotaryTables(d.head_dim, d.rope_theta)
        self.attn = Attention(d.n_heads, d.n_kv_heads, d.head_dim, d.sliding_window, cfg.rope_style == "interleaved")
        self._ada_cache: dict[int, np.ndarray] = {}

    def new_cache(self, dtype: str = "f32") -> KVCache:
        """A fresh cache stored as ``dtype`` (see kvcache.py)."""
        d = self.cfg.decoder
        return KVCache(
            d.n_layers,
            d.n_kv_heads * d.head_dim,
            d.sliding_window,
            initial_rows=128,
            dtype=dtype,
            n_kv_heads=d.n_kv_heads,
        )

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

    def forward(self, items: list[DecoderRows]) -> np.ndarray:
        """One pass over the weights for the rows of several sequences (a
        single stream is a batch of one); the final-normed hidden states of
        each item's last ``n_out`` rows, stacked in order [sum n_out, dim]."""
        d = self.cfg.decoder
        x = items[0].x.copy() if len(items) == 1 else np.concatenate([it.x for it in items])
        batch = Batch([it.cache for it in items], [it.x.shape[0] for it in items], self.rope)
        for i, lw in enumerate(self.w.decoder_layers):
            self.attn(x, K.rms_norm(x, lw.attn_norm, d.norm_eps), batch, i, lw)
            h = K.rms_norm(x, lw.ffn_norm, d.norm_eps)
            for it, sp in zip(items, batch.spans, strict=True):
                h[sp.rows] *= it.ada[i]  # each sequence's delay conditioning
            swiglu(x, h, lw.w1, lw.w3, lw.w2)
        batch.commit()
        out = np.concatenate(
            [np.arange(sp.stop - it.n_out, sp.stop) for it, sp in zip(items, batch.spans, strict=True)]
        )
        return K.rms_norm(np.ascontiguousarray(x[out]), self.w.decoder_norm, d.norm_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return linear(hidden, self.w.tok_embeddings)
