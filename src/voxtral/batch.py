"""Many streams, one model: the encoder and decoder steps of every live
stream computed together.

A decoder step is memory-bound (one pass over ~3.4 B weights for one row), so
N streams stepped as one batch of N rows cost far less than N steps. The
matrix kernels are row-deterministic (a row's result does not depend on the
other rows of the call), the norms and activations work row by row, and each
stream's attention runs over its own KV cache with its own positions: so a
stream gives exactly the bits it would give alone, whatever else is in the
batch. ``BatchedStream`` is a ``Stream`` whose encoder and decoder work is
left to the engine; the schedule (prompt, delay, padding, limit) stays the
Stream's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from .config import DEFAULT_DELAY_MS
from .kvcache import KVCache
from .layers import Attention, swiglu
from .linear import linear
from .rope import RotaryTables
from .events import TokenEvent
from .stream import Stream

# Same bound as the encoder's own passes: activation memory per stream and pass.
_MAX_ENCODER_ROWS = 256


class BatchedStream(Stream):
    """A Stream whose feed() only computes mel frames; ``BatchEngine.step()``
    runs the encoder and the decoder and returns the tokens."""

    def __init__(self, model, delay_ms: int, keep_logits: bool = False, sample_rate: int | None = None,
                 kv_cache: str | None = None):
        self._mel_queue: list[np.ndarray] = []
        super().__init__(model.config, model.front, model.encoder, model.decoder, model.tokenizer, delay_ms,
                         keep_logits=keep_logits, sample_rate=sample_rate, kv_cache=kv_cache)
        self.completed = False  # finished and every token decoded

    def _encode_mel(self, mel: np.ndarray) -> None:
        if mel.shape[0]:
            self._mel_queue.append(mel)

    def _decode(self) -> list[TokenEvent]:
        return []  # the engine decodes

    def finish(self) -> list[TokenEvent]:
        if not self.finished:
            self._end_audio()
        return []

    def take_mel(self) -> np.ndarray | None:
        if not self._mel_queue:
            return None
        mel = np.concatenate(self._mel_queue) if len(self._mel_queue) > 1 else self._mel_queue[0]
        self._mel_queue = []
        return mel

    @property
    def waiting_audio(self) -> bool:
        return bool(self._mel_queue)

    @property
    def backlog_tokens(self) -> int:
        """Audio embeddings ready but not yet decoded (how far the decoder is behind the audio)."""
        return int(self._pending.shape[0])


@dataclass
class _Span:
    cache: KVCache
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


def _batched_attention(spec: Attention, x, h, spans: list[_Span], layer: int, cos, sin, lw) -> None:
    """x += wo(attention(h)) for rows of several streams: the projections in
    one call each, the attention of each stream over its own cache."""
    bq, bv, bo = getattr(lw, "bq", None), getattr(lw, "bv", None), getattr(lw, "bo", None)
    q = linear(h, lw.wq, bq)
    k = linear(h, lw.wk)
    v = linear(h, lw.wv, bv)
    spec.rotate(q, k, cos, sin)
    attn = np.empty_like(q)
    for sp in spans:
        rows = slice(sp.start, sp.stop)
        spec.attend(sp.cache, layer, q[rows], k[rows], v[rows], attn[rows])
    linear(attn, lw.wo, bo, out=x, accumulate=True)


def _spans(caches: list[KVCache], counts: list[int], rope: RotaryTables):
    """Reserve each cache's rows; the row spans and the RoPE tables of the stacked batch."""
    spans, cos, sin = [], [], []
    start = 0
    for cache, n in zip(caches, counts, strict=True):
        cache.reserve(n)
        # Per stream, as a single stream computes them (same positions, same rounding).
        c, s = rope(cache.next_pos, n)
        cos.append(c)
        sin.append(s)
        spans.append(_Span(cache, start, start + n))
        start += n
    return spans, np.ascontiguousarray(np.concatenate(cos)), np.ascontiguousarray(np.concatenate(sin))


class BatchEngine:
    """Steps every open BatchedStream of one model together."""

    def __init__(self, model):
        self.model = model
        self.streams: list[BatchedStream] = []
        self.steps = 0
        self.rows_decoded = 0

    def open(self, delay_ms: int = DEFAULT_DELAY_MS, *, keep_logits: bool = False,
             sample_rate: int | None = None) -> BatchedStream:
        stream = BatchedStream(self.model, delay_ms, keep_logits=keep_logits, sample_rate=sample_rate)
        self.streams.append(stream)
        return stream

    def close(self, stream: BatchedStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)

    def has_work(self) -> bool:
        return any(s.waiting_audio or (not s.completed and (s._next_input() is not None or s.finished))
                   for s in self.streams)

    # ---- encoder ----
    def _encode(self, streams: list[BatchedStream]) -> None:
        enc = self.model.encoder
        stems = {id(s): enc._conv_stem(s._enc, np.ascontiguousarray(s.take_mel(), dtype=np.float32)) for s in streams}
        done = {id(s): 0 for s in streams}
        frames: dict[int, list[np.ndarray]] = {id(s): [] for s in streams}
        while True:
            part = [(s, stems[id(s)][done[id(s)] : done[id(s)] + _MAX_ENCODER_ROWS]) for s in streams]
            part = [(s, p) for s, p in part if p.shape[0]]
            if not part:
                break
            out = self._encoder_layers([s._enc.cache for s, _ in part], [p for _, p in part])
            for (s, p), o in zip(part, out, strict=True):
                frames[id(s)].append(o)
                done[id(s)] += p.shape[0]
        for s in streams:
            got = frames[id(s)]
            if got:
                s._add_embeddings(enc.embed_frames(s._enc, np.concatenate(got) if len(got) > 1 else got[0]))

    def _encoder_layers(self, caches: list[KVCache], parts: list[np.ndarray]) -> list[np.ndarray]:
        enc = self.model.encoder
        e = enc.cfg.encoder
        x = np.ascontiguousarray(np.concatenate(parts))
        spans, cos, sin = _spans(caches, [p.shape[0] for p in parts], enc.rope)
        for i, lw in enumerate(enc.w.encoder_layers):
            h = K.rms_norm(x, lw.attn_norm, e.norm_eps)
            _batched_attention(enc.attn, x, h, spans, i, cos, sin, lw)
            swiglu(x, K.rms_norm(x, lw.ffn_norm, e.norm_eps), lw.w1, lw.w3, lw.w2, lw.b2)
        for sp in spans:
            sp.cache.commit(sp.n)
        y = K.rms_norm(x, enc.w.encoder_norm, e.norm_eps)
        return [y[sp.start : sp.stop] for sp in spans]

    # ---- decoder ----
    def _decode(self, items: list[tuple[BatchedStream, np.ndarray, int]]) -> list[np.ndarray]:
        dec = self.model.decoder
        d = dec.cfg.decoder
        x = np.ascontiguousarray(np.concatenate([inp for _, inp, _ in items]))
        spans, cos, sin = _spans([s._cache for s, _, _ in items], [inp.shape[0] for _, inp, _ in items], dec.rope)
        # Each row's delay conditioning: its stream's [n_layers, dim] scales.
        ada = np.concatenate([np.repeat(s._ada[:, None, :], inp.shape[0], axis=1) for s, inp, _ in items], axis=1)
        for i, lw in enumerate(dec.w.decoder_layers):
            h = K.rms_norm(x, lw.attn_norm, d.norm_eps)
            _batched_attention(dec.attn, x, h, spans, i, cos, sin, lw)
            h = K.rms_norm(x, lw.ffn_norm, d.norm_eps)
            h *= ada[i]
            swiglu(x, h, lw.w1, lw.w3, lw.w2)
        for sp in spans:
            sp.cache.commit(sp.n)
        last = np.ascontiguousarray(x[[sp.stop - 1 for sp in spans]])
        logits = dec.logits(K.rms_norm(last, dec.w.decoder_norm, d.norm_eps))
        self.rows_decoded += x.shape[0]
        return [logits[j : j + 1] for j in range(len(items))]

    def step(self) -> dict[BatchedStream, list[TokenEvent]]:
        """One encoder pass for every stream with new audio, then one decoder
        step (one token) for every stream that has its next input; returns the
        new events by stream (streams that completed get their last text)."""
        events: dict[BatchedStream, list[TokenEvent]] = {}
        waiting = [s for s in self.streams if s.waiting_audio]
        if waiting:
            self._encode(waiting)
        items = []
        for s in self.streams:
            if s.completed:
                continue
            nxt = s._next_input()
            if nxt is not None:
                items.append((s, nxt[0], nxt[1]))
        if items:
            self.steps += 1
            for (s, _, position), logits in zip(items, self._decode(items), strict=True):
                events.setdefault(s, []).append(s._accept(logits, position))
        for s in self.streams:
            if s.finished and not s.completed and not s.waiting_audio and s._next_input() is None:
                s.completed = True
                events[s] = s._close_text(events.get(s, []))
        return events

    def run_until_idle(self) -> dict[BatchedStream, list[TokenEvent]]:
        """Step until no stream can make progress; all events by stream."""
        out: dict[BatchedStream, list[TokenEvent]] = {}
        while True:
            got = self.step()
            if not got:
                return out
            for s, ev in got.items():
                out.setdefault(s, []).extend(ev)
