"""One transcription in progress: the schedule of a stream, and its step
protocol with the engine (engine.py).

A ``Stream`` carries the state of one transcription (log-mel framing, the
encoder's incremental state, audio embeddings not yet decoded, the decoder's
KV cache, the greedy schedule) and says what it needs next; the ``Engine``
computes it, for one stream or many together:

1. ``take_mel()``: mel frames waiting for the encoder (with the stream's
   encoder state); the engine hands the embeddings back to ``add_embeddings()``;
2. ``next_step()``: the decoder rows of its next step(s), or None while it
   waits for audio; the engine hands their logits back to ``accept()``;
3. ``done`` / ``close()``: the audio has ended and everything is decoded.

``push()``/``end()`` only add audio (mel frames): the server feeds many
streams that way and runs the engine on all of them; ``feed()``/``finish()``
add audio and run the engine on this stream alone. Offline transcription is
``feed(everything)`` + ``finish()``; live audio is many small feeds; both
give the same tokens.

Schedule (as the reference implementation pads): the stream starts with
``n_left_pad_tokens`` tokens of silence; the prompt is BOS + STREAMING_PAD x
(left pad + delay tokens); the decoder input at position p is
audio_embedding[p] + embedding(token[p]); the prompt's last position yields
the first token; at the end the audio is padded to a whole token plus
(delay + 1 + buffer) tokens of silence and decoding stops at EOS or when the
last audio embedding would be needed (total positions N, as the reference's
max_length).

Drafted verification: when audio for several positions is waiting, a step
covers up to ``draft_steps`` positions at once, the inputs after the first
drafted by the stream's draft sources (drafts.py: STREAMING_PAD, what most
steps emit, where the audio's energy says so or by an adaptive window; the rest of
a word seen before). ``accept()`` keeps the
longest prefix whose greedy tokens equal the drafts, plus the first token
that differs, and rolls the rejected rows back out of the KV cache. Row
results do not depend on the other rows of a pass, so the tokens are those of
step-by-step decoding, whatever is accepted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .audio import Resampler, samples_to_float
from .decoder import DecoderRows
from .drafts import Drafter, EnergyDrafts, PadDrafts, WordDrafts
from .encoder import EncoderState
from .errors import UsageError
from .events import TokenEvent
from .mel import LogMelStream
from .options import Options

if TYPE_CHECKING:
    from .model import VoxtralModel


@dataclass
class StreamStart:
    """Where every stream starts: the left padding (silence) framed and
    encoded (``VoxtralModel.start_state``); a stream takes copies."""

    mel: LogMelStream
    encoder: EncoderState
    embeddings: np.ndarray


@dataclass
class DecodeStep:
    """The decoder work of one stream's step: ``rows`` (inputs and cache),
    the position of the token its first output row yields, and the drafted
    input tokens of the rows after the first (one per further output row)."""

    rows: DecoderRows
    position: int
    drafts: list[int]
    sources: list[str] = dataclasses.field(default_factory=list)  # the draft source of each draft


class Stream:
    """One transcription in progress (``VoxtralModel.stream()`` opens one).
    ``model``: the VoxtralModel whose parts it uses (config, front end,
    tokenizer, encoder, decoder, engine, start state)."""

    def __init__(self, model: VoxtralModel, options: Options):
        cfg = self.config = model.config
        self.options = options
        self.engine = model.engine
        self.tokenizer = tok = model.tokenizer
        self.delay_ms = options.delay_ms
        self.n_delay = cfg.delay_tokens(options.delay_ms)
        rate = cfg.audio.sampling_rate if options.sample_rate is None else options.sample_rate
        self._resample = Resampler(rate, cfg.audio.sampling_rate)
        self.prompt = [tok.bos_id] + [tok.streaming_pad_id] * (cfg.n_left_pad_tokens + self.n_delay)
        self.samples_per_token = cfg.audio.samples_per_token
        self.seconds_per_token = self.samples_per_token / cfg.audio.sampling_rate
        self._embed = model.decoder.embed
        # the left padding, already framed and encoded; the encoder's attention cache is stored
        # like the decoder's: with quantized weights it is a third of a live push's memory traffic
        start = model.start_state(options.kv_cache)
        self._mel = start.mel.copy()
        self._mel_queue: list[np.ndarray] = []
        self._cache = model.decoder.new_cache(options.kv_cache)
        self._enc = start.encoder.copy()
        self._ada = model.decoder.ada_scales(self.n_delay)
        self._text = tok.stream_decoder()
        self._pending = start.embeddings  # never written in place (replaced as embeddings come and go)
        self._pending_pos = 0  # position of _pending[0]
        self._last_token: int | None = None
        self.drafter = self._drafter(options.drafts)
        self.tokens: list[int] = []
        self.samples_in = 0
        self.finished = False  # the audio has ended
        self.completed = False  # ... and everything is decoded and closed
        self.ended_by_eos = False
        self.passes = 0  # decoder passes this stream took part in
        self._limit: int | None = None  # total positions N, known at the end of the audio
        # Tests compare every step's logits with the reference.
        self.logits: list[np.ndarray] | None = [] if options.keep_logits else None

    def _drafter(self, names: str) -> Drafter:
        pad = self.tokenizer.streaming_pad_id
        make = {
            "pad": lambda: PadDrafts(pad),
            "energy": lambda: EnergyDrafts(pad, self.config.n_left_pad_tokens, self.samples_per_token, self.n_delay),
            "word": lambda: WordDrafts(pad, self.tokenizer.is_control),
        }
        return Drafter([make[name]() for name in names.split(",")])

    # ---- audio in ----
    def _push_audio(self, samples: np.ndarray) -> None:
        if self.ended_by_eos:  # the model has ended the transcript: nothing more to compute or keep
            return
        self.drafter.audio(samples)
        mel = self._mel.push(samples)
        if mel.shape[0]:
            self._mel_queue.append(mel)

    def push(self, samples: npt.ArrayLike) -> None:
        """Add mono samples (float32 in [-1, 1] or int16) at the stream's rate,
        without decoding (the engine does that)."""
        if self.finished:
            raise UsageError("feed() after finish(): open a new stream")
        arr = self._resample(samples_to_float(samples, "feed()"))
        if arr.shape[0] == 0:
            return
        self.samples_in += arr.shape[0]
        self._push_audio(arr)

    def end(self) -> None:
        """Mark the end of the audio: the right padding and the position limit (no decoding)."""
        if self.finished:
            return
        self.finished = True
        cfg = self.config
        tail = self._resample(np.zeros(0, dtype=np.float32), last=True)
        if tail.shape[0]:
            self.samples_in += tail.shape[0]
            self._push_audio(tail)
        spt = self.samples_per_token
        right = (-self.samples_in) % spt + (self.n_delay + 1 + cfg.n_right_pad_buffer_tokens) * spt
        self._push_audio(np.zeros(right, dtype=np.float32))
        mel = self._mel.finish()
        if mel.shape[0] and not self.ended_by_eos:
            self._mel_queue.append(mel)
        self._limit = (cfg.n_left_pad_tokens * spt + self.samples_in + right) // spt

    # ---- step protocol (the engine) ----
    def take_mel(self) -> tuple[EncoderState, np.ndarray] | None:
        """Mel frames waiting for the encoder, with this stream's encoder state."""
        if not self._mel_queue:
            return None
        q = self._mel_queue
        self._mel_queue = []
        return self._enc, np.concatenate(q) if len(q) > 1 else q[0]

    def add_embeddings(self, emb: np.ndarray) -> None:
        """The encoder's audio embeddings of the frames ``take_mel()`` gave."""
        if emb.shape[0]:
            self._pending = np.concatenate([self._pending, emb]) if self._pending.shape[0] else emb

    @property
    def waiting_audio(self) -> bool:
        return bool(self._mel_queue)

    @property
    def started(self) -> bool:
        """The prompt has been decoded (the first token is out)."""
        return self._last_token is not None

    @property
    def backlog_tokens(self) -> int:
        """Decoder steps whose audio is there but that have not run: how far the
        decoder is behind the audio (not what the schedule itself waits for:
        before the first token, the prompt's positions and the delay)."""
        got = self._next_rows(cap=False)
        return 0 if got is None else got[2] - len(got[1]) + 1

    def _next_rows(self, cap: bool = True) -> tuple[int, list[int], int] | None:
        """(first position, known input tokens, rows) of the next step, or None;
        rows are capped at what one step verifies unless ``cap`` is False."""
        if self.ended_by_eos or self.completed:
            return None
        end = self._pending_pos + self._pending.shape[0]  # positions with audio embeddings
        if self._limit is not None:
            end = min(end, self._limit - 1)  # the last token yielded is at position limit - 1
        pos = self._cache.next_pos
        known = self.prompt if self._last_token is None else [self._last_token]
        n = end - pos
        if cap:
            n = min(n, len(known) - 1 + self.options.draft_steps)
        return None if n < len(known) else (pos, known, n)

    def next_step(self) -> DecodeStep | None:
        """The decoder rows of the next step, or None while the schedule
        waits for audio (or is over). Up to ``draft_steps`` positions whose
        audio is there are covered at once, as the draft sources guess them."""
        got = self._next_rows()
        if got is None:
            return None
        pos, known, n = got
        draft = self.drafter.propose(pos + len(known), n - len(known), self.tokens) if n > len(known) else None
        drafts = [] if draft is None else draft.tokens[: n - len(known)]
        rows = pos - self._pending_pos
        x = self._pending[rows : rows + len(known) + len(drafts)] + self._embed(known + drafts)
        rows_in = DecoderRows(self._cache, x, self._ada, n_out=1 + len(drafts))
        return DecodeStep(rows_in, pos + len(known), drafts, [] if draft is None else draft.sources[: len(drafts)])

    def accept(self, step: DecodeStep, logits: np.ndarray) -> list[TokenEvent]:
        """Take the logits [n_out, vocab] of ``step``: the tokens of the drafts
        that held plus the first correct one; the other rows leave the cache."""
        events = []
        for i in range(step.rows.n_out):
            if i and step.drafts[i - 1] != self._last_token:
                break
            events.append(self._emit(logits[i], step.position + i))
            if self.ended_by_eos:
                break
        accepted = len(events)
        self._cache.rollback(step.rows.n_out - accepted)
        if step.drafts:
            self.drafter.update(len(step.drafts), accepted - 1)
        self.passes += 1
        used = self._cache.next_pos - self._pending_pos
        if used > 0:
            self._pending = self._pending[used:]
            self._pending_pos += used
        return events

    @property
    def memory(self) -> dict[str, Any]:
        """What the stream holds (tests bound it on long streams): the decoder and
        encoder KV caches, embeddings not yet decoded, samples in the mel framer."""
        return {
            "decoder_cache": self._cache,
            "encoder_cache": self._enc.cache,
            "pending_embeddings": int(self._pending.shape[0]),
            "mel_samples": self._mel.buffered_samples,
        }

    def fast_forward(self, fill: Callable[[Any], int]) -> int:
        """Benchmarks: ``fill(decoder_cache)`` adds copies of rows to the cache
        (a long context without decoding it) and returns how many; the
        schedule's positions move on by as much."""
        added = int(fill(self._cache))
        self._pending_pos += added
        return added

    @property
    def has_work(self) -> bool:
        """The engine can make progress on this stream now."""
        return bool(self._mel_queue) or self._next_rows() is not None or self.done

    @property
    def done(self) -> bool:
        """The audio has ended and there is nothing left to decode."""
        return self.finished and not self.completed and not self._mel_queue and self._next_rows() is None

    def close(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """The stream's last events: ``events`` with any incomplete UTF-8 sequence at the very end."""
        self.completed = True
        leftover = self._text.flush()
        if leftover:
            if events:
                events[-1] = dataclasses.replace(events[-1], text=events[-1].text + leftover)
            else:  # rare: nothing decoded in this call; token_id -1 marks "text only"
                events.append(TokenEvent(-1, leftover, self._cache.next_pos, 0.0, 0.0))
        return events

    def _emit(self, logits: np.ndarray, position: int) -> TokenEvent:
        if self.logits is not None:
            self.logits.append(logits.copy())
        token = int(np.argmax(logits))
        self._last_token = token
        self.tokens.append(token)
        if token == self.tokenizer.eos_id:
            self.ended_by_eos = True
        slot = position - self.config.n_left_pad_tokens - 1 - self.n_delay
        start = max(0.0, slot * self.seconds_per_token)
        end = max(0.0, (slot + 1) * self.seconds_per_token)
        return TokenEvent(token, self._text.push(token), position, start, end, self.tokenizer.is_control(token))

    # ---- public API: this stream alone ----
    def feed(self, samples: npt.ArrayLike) -> list[TokenEvent]:
        """Add mono samples (float32 in [-1, 1] or int16) at the stream's rate;
        returns the tokens they complete."""
        self.push(samples)
        return self.engine.run(self)

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

    def finish(self) -> list[TokenEvent]:
        """End of audio: pad as the model's schedule says and decode the rest."""
        if self.finished:
            return []
        self.end()
        return self.engine.run(self)

    def transcribe_chunks(self, chunks: Iterable[npt.ArrayLike]) -> Iterator[TokenEvent]:
        """Feed every chunk of an iterable, then finish; yields events as decoded."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    async def atranscribe_chunks(self, chunks: AsyncIterable[npt.ArrayLike]) -> AsyncIterator[TokenEvent]:
        """Async version: the model runs in a worker thread so the event loop stays free."""
        async for chunk in chunks:
            for event in await asyncio.to_thread(self.feed, chunk):
                yield event
        for event in await asyncio.to_thread(self.finish):
            yield event
