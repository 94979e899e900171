"""The transcription engine: audio in, tokens out, incrementally.

One ``Stream`` carries the whole pipeline state (log-mel framing, encoder
caches, pending audio embeddings, decoder KV cache, greedy schedule), so that
offline transcription is just ``feed(everything)`` + ``finish()`` and live
audio is many small feeds: both give the same tokens.

Schedule (as the reference implementation pads): the stream starts with ``n_left_pad_tokens`` tokens of
silence; the prompt is BOS + STREAMING_PAD x (left pad + delay tokens); the
decoder input at position p is audio_embedding[p] + embedding(token[p]); the
prompt's last position yields the first token; at the end the audio is padded
to a whole token plus (delay + 1 + buffer) tokens of silence and decoding stops
at EOS or when the last audio embedding would be needed (total positions N,
as the reference's max_length).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator, Iterable, Iterator

import numpy as np

from .audio import Resampler, check_sample_rate, samples_to_float
from .errors import UsageError
from .events import TokenEvent
from .mel import LogMelStream

if TYPE_CHECKING:
    from .config import ModelConfig
    from .decoder import TextDecoder
    from .encoder import AudioEncoder
    from .mel import MelFrontEnd
    from .tokenizer import TekkenTokenizer


class Stream:
    """One transcription in progress. It is given the model's parts it uses:
    the ``config`` (schedule and dimensions), the mel ``front`` end, the audio
    ``encoder``, the text ``decoder`` and the ``tokenizer`` (prompt ids, EOS,
    text). ``VoxtralModel.stream()`` is the usual way to open one."""

    def __init__(self, config: ModelConfig, front: MelFrontEnd, encoder: AudioEncoder, decoder: TextDecoder,
                 tokenizer: TekkenTokenizer, delay_ms: int, *,
                 keep_logits: bool = False, sample_rate: int | None = None, kv_cache: str | None = None):
        cfg = self.config = config
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        rate = cfg.audio.sampling_rate if sample_rate is None else check_sample_rate(sample_rate, "sample_rate")
        self._resample = Resampler(rate, cfg.audio.sampling_rate)
        self.delay_ms = delay_ms
        self.n_delay = cfg.delay_tokens(delay_ms)
        tok = tokenizer
        self.prompt = [tok.bos_id] + [tok.streaming_pad_id] * (cfg.n_left_pad_tokens + self.n_delay)
        self.samples_per_token = cfg.audio.samples_per_token
        self.seconds_per_token = self.samples_per_token / cfg.audio.sampling_rate
        self._mel = LogMelStream(front)
        self._cache = decoder.new_cache(kv_cache)
        # the encoder's attention cache is stored like the decoder's: with
        # quantized weights it is a third of a live push's memory traffic
        self._enc = encoder.new_state(self._cache.dtype)
        self._ada = decoder.ada_scales(self.n_delay)
        self._text = tok.stream_decoder()
        self._pending = np.zeros((0, cfg.decoder.dim), dtype=np.float32)
        self._pending_pos = 0  # position of _pending[0]
        self._last_token: int | None = None
        self.tokens: list[int] = []
        self.samples_in = 0
        self.finished = False
        self.ended_by_eos = False
        self._limit: int | None = None  # total positions N, known at finish
        # Tests compare every step's logits with the reference.
        self.logits: list[np.ndarray] | None = [] if keep_logits else None
        self._push_audio(np.zeros(cfg.n_left_pad_tokens * self.samples_per_token, dtype=np.float32))

    # ---- audio side ----
    def _push_audio(self, samples: np.ndarray) -> None:
        self._encode_mel(self._mel.push(samples))

    def _encode_mel(self, mel: np.ndarray) -> None:
        """Mel frames -> audio embeddings (the batch engine defers this step)."""
        self._add_embeddings(self.encoder.push(self._enc, mel))

    def _add_embeddings(self, emb: np.ndarray) -> None:
        if emb.shape[0]:
            self._pending = np.concatenate([self._pending, emb]) if self._pending.shape[0] else emb

    # ---- decoder side ----
    def _event(self, token: int, position: int) -> TokenEvent:
        slot = position - self.config.n_left_pad_tokens - 1 - self.n_delay
        start = max(0.0, slot * self.seconds_per_token)
        end = max(0.0, (slot + 1) * self.seconds_per_token)
        control = self.tokenizer.is_control(token)
        return TokenEvent(token, self._text.push(token), position, start, end, control)

    def _take(self, position: int) -> np.ndarray:
        row = position - self._pending_pos
        return self._pending[row : row + 1]

    def _emit(self, logits: np.ndarray, position: int) -> TokenEvent:
        if self.logits is not None:
            self.logits.append(logits[0].copy())
        token = int(np.argmax(logits[0]))
        self._last_token = token
        self.tokens.append(token)
        if token == self.tokenizer.eos_id:
            self.ended_by_eos = True
        return self._event(token, position)

    def _next_input(self) -> tuple[np.ndarray, int] | None:
        """The decoder's next input rows [n, dim] and the position of the token
        they yield, or None while the schedule has to wait for audio (or is over)."""
        if self.ended_by_eos:
            return None
        dec = self.decoder
        available_end = self._pending_pos + self._pending.shape[0]  # positions with embeddings
        L = len(self.prompt)
        if self._last_token is None:
            # prefill: positions 0..L-1 at once; yields the token of position L
            if available_end < L or (self._limit is not None and L > self._limit - 1):
                return None
            return self._pending[:L] + dec.embed(self.prompt), L
        pos = self._cache.next_pos
        if pos >= available_end or (self._limit is not None and pos + 1 > self._limit - 1):
            return None
        return self._take(pos) + dec.embed([self._last_token]), pos + 1

    def _accept(self, logits: np.ndarray, position: int) -> TokenEvent:
        """Take the logits [1, vocab] of the step that _next_input() prepared."""
        event = self._emit(logits, position)
        self._drop_consumed()
        return event

    def _decode(self) -> list[TokenEvent]:
        dec = self.decoder
        events: list[TokenEvent] = []
        while (step := self._next_input()) is not None:
            x, position = step
            hidden = dec.forward(self._cache, np.ascontiguousarray(x), self._ada)
            events.append(self._accept(dec.logits(hidden), position))
        return events

    def _drop_consumed(self) -> None:
        used = self._cache.next_pos - self._pending_pos
        if used > 0:
            self._pending = self._pending[used:]
            self._pending_pos += used

    # ---- public API ----
    def feed(self, samples: np.ndarray) -> list[TokenEvent]:
        """Add mono samples (float32 in [-1, 1] or int16) at the stream's rate;
        returns the tokens they complete."""
        if self.finished:
            raise UsageError("feed() after finish(): open a new stream")
        arr = self._resample(samples_to_float(samples, "feed()"))
        if arr.shape[0] == 0:
            return []
        self.samples_in += arr.shape[0]
        if self.ended_by_eos:
            return []  # the model has ended the transcript: nothing more to compute or keep
        self._push_audio(arr)
        return self._decode()

    def flush(self) -> list[TokenEvent]:
        """Emit what the delay still holds, keeping the stream open: inserts
        silence up to the next token boundary plus (delay + 1) tokens, exactly
        as if that silence had been fed (so the stream stays equal to offline
        transcription of the audio with the silence in it)."""
        if self.finished:
            return []
        spt = self.samples_per_token
        pad = (-self.samples_in) % spt + (self.n_delay + 1) * spt
        return self.feed(np.zeros(pad, dtype=np.float32))

    def transcribe_chunks(self, chunks: Iterable[np.ndarray]) -> Iterator[TokenEvent]:
        """Feed every chunk of an iterable, then finish; yields events as decoded."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    async def atranscribe_chunks(self, chunks: AsyncIterable[np.ndarray]) -> AsyncIterator[TokenEvent]:
        """Async version: the model runs in a worker thread so the event loop stays free."""
        async for chunk in chunks:
            for event in await asyncio.to_thread(self.feed, chunk):
                yield event
        for event in await asyncio.to_thread(self.finish):
            yield event

    def finish(self) -> list[TokenEvent]:
        """End of audio: pad as the model's schedule says and decode the rest."""
        if self.finished:
            return []
        self._end_audio()
        return self._close_text(self._decode())

    def _end_audio(self) -> None:
        """Mark the end of the audio: the right padding and the position limit."""
        self.finished = True
        cfg = self.config
        tail = self._resample(np.zeros(0, dtype=np.float32), last=True)
        if tail.shape[0]:
            self.samples_in += tail.shape[0]
            self._push_audio(tail)
        spt = self.samples_per_token
        right = (-self.samples_in) % spt + (self.n_delay + 1 + cfg.n_right_pad_buffer_tokens) * spt
        self._push_audio(np.zeros(right, dtype=np.float32))
        self._encode_mel(self._mel.finish())
        total_samples = cfg.n_left_pad_tokens * spt + self.samples_in + right
        self._limit = total_samples // spt

    def _close_text(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """The last events of the stream, with any incomplete UTF-8 sequence at the very end."""
        leftover = self._text.flush()
        if leftover:
            if events:
                events[-1] = dataclasses.replace(events[-1], text=events[-1].text + leftover)
            else:  # rare: nothing decoded in this call; token_id -1 marks "text only"
                at = self._cache.next_pos
                events.append(TokenEvent(-1, leftover, at, 0.0, 0.0))
        return events
