"""Audio encoder: causal conv stem, causal sliding-window transformer,
stacking of ``downsample_factor`` frames and the adapter to the decoder's width.

Everything is incremental: ``AudioEncoder.push(state, mel_frames)`` returns
the audio embeddings that the new mel frames complete, carrying the conv
boundary frames, the attention KV cache and the stacking remainder in
``EncoderState``. Offline and streaming share this one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .kvcache import KVCache
from .linear import linear
from .layers import Attention, scratch, swiglu
from .rope import RotaryTables
from .weights import Weights

_KERNEL = 3  # conv stem kernel size (architecture)
_MAX_FRAMES_PER_PASS = 256  # bounds activation memory on long inputs


@dataclass
class EncoderState:
    conv1_tail: np.ndarray  # last (kernel - 1) mel frames
    conv2_pending: np.ndarray  # conv1 outputs not yet consumed by the stride-2 conv
    cache: KVCache
    stack_pending: np.ndarray  # encoder frames waiting for a full group of `downsample_factor`


class AudioEncoder:
    def __init__(self, cfg: ModelConfig, w: Weights):
        self.cfg = cfg
        self.w = w
        e = cfg.encoder
        self.rope = RotaryTables(e.head_dim, e.rope_theta)
        self.attn = Attention(e.n_heads, e.n_kv_heads, e.head_dim, e.sliding_window, cfg.rope_style == "interleaved")

    def new_state(self, kv_cache: str = "f32") -> EncoderState:
        """Fresh incremental state; ``kv_cache``: the attention cache's storage
        (f32 exact, or bf16/int8 like the decoder's, see kvcache.py)."""
        e, a = self.cfg.encoder, self.cfg.audio
        return EncoderState(
            conv1_tail=np.zeros((_KERNEL - 1, a.num_mel_bins), dtype=np.float32),
            # causal padding of the stride-2 conv: kernel - stride zero frames
            conv2_pending=np.zeros((_KERNEL - a.conv_stride, e.dim), dtype=np.float32),
            cache=KVCache(e.n_layers, e.n_kv_heads * e.head_dim, e.sliding_window, dtype=kv_cache,
                          n_kv_heads=e.n_kv_heads),
            stack_pending=np.zeros((0, e.dim), dtype=np.float32),
        )

    # ---- conv stem ----
    def _conv_stem(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        stride = self.cfg.audio.conv_stride
        if mel.shape[0] == 0:
            return np.zeros((0, self.cfg.encoder.dim), dtype=np.float32)
        x = np.concatenate([st.conv1_tail, mel])
        st.conv1_tail = x[-(_KERNEL - 1):].copy()
        y1 = K.gelu(K.conv1d_bf16(x, self.w.conv1_w, self.w.conv1_b, 1))
        buf = np.concatenate([st.conv2_pending, y1])
        n_out = (buf.shape[0] - _KERNEL) // stride + 1 if buf.shape[0] >= _KERNEL else 0
        st.conv2_pending = buf[n_out * stride:].copy()
        if n_out == 0:
            return np.zeros((0, self.cfg.encoder.dim), dtype=np.float32)
        used = buf[: (n_out - 1) * stride + _KERNEL]
        return K.gelu(K.conv1d_bf16(np.ascontiguousarray(used), self.w.conv2_w, self.w.conv2_b, stride))

    # ---- transformer ----
    def _layers(self, st: EncoderState, x: np.ndarray) -> np.ndarray:
        e = self.cfg.encoder
        n = x.shape[0]
        cache = st.cache
        cache.reserve(n)
        cos, sin = self.rope(cache.next_pos, n)
        q, attn = scratch(n, self.attn)
        for i, lw in enumerate(self.w.encoder_layers):
            h = K.rms_norm(x, lw.attn_norm, e.norm_eps)
            self.attn(x, h, cache, i, cos, sin, q, attn, lw.wq, lw.wk, lw.wv, lw.wo, lw.bq, lw.bv, lw.bo)
            swiglu(x, K.rms_norm(x, lw.ffn_norm, e.norm_eps), lw.w1, lw.w3, lw.w2, lw.b2)
        cache.commit(n)
        return K.rms_norm(x, self.w.encoder_norm, e.norm_eps)

    def _adapter(self, frames: np.ndarray) -> np.ndarray:
        stacked = frames.reshape(-1, frames.shape[1] * self.cfg.audio.downsample_factor)
        return linear(K.gelu(linear(stacked, self.w.adapter1)), self.w.adapter2)

    def encode_frames(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        """Mel frames -> final encoder frames (before stacking), incremental."""
        stem = self._conv_stem(st, np.ascontiguousarray(mel, dtype=np.float32))
        outs = []
        for s in range(0, stem.shape[0], _MAX_FRAMES_PER_PASS):
            chunk = np.ascontiguousarray(stem[s : s + _MAX_FRAMES_PER_PASS])
            outs.append(self._layers(st, chunk))
        if not outs:
            return np.zeros((0, self.cfg.encoder.dim), dtype=np.float32)
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def push(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        """Mel frames -> audio embeddings [n_tokens, decoder dim] for every complete group."""
        return self.embed_frames(st, self.encode_frames(st, mel))

    def embed_frames(self, st: EncoderState, frames: np.ndarray) -> np.ndarray:
        """Final encoder frames -> audio embeddings for every complete group
        (the stacking remainder waits in ``st``)."""
        group = self.cfg.audio.downsample_factor
        pending = np.concatenate([st.stack_pending, frames]) if st.stack_pending.shape[0] else frames
        n_full = pending.shape[0] // group * group
        st.stack_pending = pending[n_full:].copy()
        if n_full == 0:
            return np.zeros((0, self.cfg.decoder.dim), dtype=np.float32)
        return self._adapter(np.ascontiguousarray(pending[:n_full]))
