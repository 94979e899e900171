"""Audio encoder: causal conv stem, causal sliding-window transformer,
stacking of ``downsample_factor`` frames and the adapter to the decoder's width.

Everything is incremental: ``AudioEncoder.push(state, mel_frames)`` returns
the audio embeddings that the new mel frames complete, carrying the conv
boundary frames, the attention KV cache and the stacking remainder in
``EncoderState``. Offline and streaming share this one code path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .kvcache import KVCache
from .layers import Attention, Batch, swiglu
from .linear import linear
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

    def copy(self) -> EncoderState:
        """An independent copy (the arrays other than the cache are replaced, never written in place)."""
        return dataclasses.replace(self, cache=self.cache.copy())


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
            cache=KVCache(
                e.n_layers, e.n_kv_heads * e.head_dim, e.sliding_window, dtype=kv_cache, n_kv_heads=e.n_kv_heads
            ),
            stack_pending=np.zeros((0, e.dim), dtype=np.float32),
        )

    # ---- conv stem ----
    def _conv_stem(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        stride = self.cfg.audio.conv_stride
        if mel.shape[0] == 0:
            return np.zeros((0, self.cfg.encoder.dim), dtype=np.float32)
        x = np.concatenate([st.conv1_tail, np.asarray(mel, dtype=np.float32)])
        st.conv1_tail = x[-(_KERNEL - 1) :].copy()
        y1 = K.gelu(K.conv1d_bf16(x, self.w.conv1_w, self.w.conv1_b, 1))
        buf = np.concatenate([st.conv2_pending, y1])
        n_out = (buf.shape[0] - _KERNEL) // stride + 1 if buf.shape[0] >= _KERNEL else 0
        st.conv2_pending = buf[n_out * stride :].copy()
        if n_out == 0:
            return np.zeros((0, self.cfg.encoder.dim), dtype=np.float32)
        used = buf[: (n_out - 1) * stride + _KERNEL]
        return K.gelu(K.conv1d_bf16(np.ascontiguousarray(used), self.w.conv2_w, self.w.conv2_b, stride))

    # ---- transformer ----
    def _layers(self, caches: list[KVCache], parts: list[np.ndarray]) -> list[np.ndarray]:
        """Final encoder frames of several sequences' new conv-stem frames, in one pass."""
        e = self.cfg.encoder
        x = parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
        batch = Batch(caches, [p.shape[0] for p in parts], self.rope)
        for i, lw in enumerate(self.w.encoder_layers):
            self.attn(x, K.rms_norm(x, lw.attn_norm, e.norm_eps), batch, i, lw)
            swiglu(x, K.rms_norm(x, lw.ffn_norm, e.norm_eps), lw.w1, lw.w3, lw.w2, lw.b2)
        batch.commit()
        y = K.rms_norm(x, self.w.encoder_norm, e.norm_eps)
        return [y[sp.rows] for sp in batch.spans]

    def _stack(self, st: EncoderState, frames: np.ndarray) -> np.ndarray:
        """Final encoder frames -> rows of ``downsample_factor`` stacked frames (the remainder waits in ``st``)."""
        group = self.cfg.audio.downsample_factor
        pending = np.concatenate([st.stack_pending, frames]) if st.stack_pending.shape[0] else frames
        n_full = pending.shape[0] // group * group
        st.stack_pending = pending[n_full:].copy()
        return pending[:n_full].reshape(-1, frames.shape[1] * group)

    def _frames(self, states: list[EncoderState], mels: list[np.ndarray]) -> list[np.ndarray]:
        """Mel frames -> final encoder frames (before stacking), per sequence, in
        passes of at most ``_MAX_FRAMES_PER_PASS`` frames per sequence."""
        stems = [self._conv_stem(st, mel) for st, mel in zip(states, mels, strict=True)]
        frames: list[list[np.ndarray]] = [[] for _ in states]
        for s in range(0, max(stem.shape[0] for stem in stems), _MAX_FRAMES_PER_PASS):
            todo = [j for j, stem in enumerate(stems) if stem.shape[0] > s]
            parts = [stems[j][s : s + _MAX_FRAMES_PER_PASS] for j in todo]
            for j, out in zip(todo, self._layers([states[j].cache for j in todo], parts), strict=True):
                frames[j].append(out)
        dim = self.cfg.encoder.dim
        return [np.concatenate(f) if len(f) > 1 else f[0] if f else np.zeros((0, dim), np.float32) for f in frames]

    def forward(self, states: list[EncoderState], mels: list[np.ndarray]) -> list[np.ndarray]:
        """New mel frames of several sequences -> the audio embeddings
        [n_tokens, decoder dim] they complete, one array per state (a single
        stream is a batch of one); incremental."""
        stacked = [self._stack(st, f) for st, f in zip(states, self._frames(states, mels), strict=True)]
        counts = [r.shape[0] for r in stacked]
        if not sum(counts):
            return [np.zeros((0, self.cfg.decoder.dim), dtype=np.float32) for _ in states]
        rows = np.ascontiguousarray(np.concatenate(stacked))
        emb = linear(K.gelu(linear(rows, self.w.adapter1)), self.w.adapter2)
        return np.split(emb, np.cumsum(counts)[:-1])

    def encode_frames(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        """One sequence's mel frames -> final encoder frames before stacking (what parity tests compare)."""
        return self._frames([st], [mel])[0]

    def push(self, st: EncoderState, mel: np.ndarray) -> np.ndarray:
        """One sequence's new mel frames -> the audio embeddings they complete."""
        return self.forward([st], [mel])[0]
