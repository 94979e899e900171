"""Sessions and the batch scheduler.

Every session (a WebSocket connection or an HTTP transcription) owns an
inbox of received audio and an outbox of events. One scheduler task owns the
``BatchEngine``: it moves audio from the inboxes into the streams (at most
``feed_seconds_per_step`` per stream and step, so a long upload or a client
sending faster than real time cannot starve the others; and only while
fewer than ``max_ready_tokens`` of its tokens wait for the decoder), runs one batched
step in a worker thread, and puts the resulting events into the outboxes.
It never awaits a client: a slow reader only grows its own outbox (and is
cut off past ``max_pending_events``). When a session's backlog (audio
received but not yet decoded) passes ``lag_warn_seconds`` it gets a
``transcription.lag`` event; past ``max_backlog_seconds`` further audio is
refused with an error event and counted as dropped, never dropped silently.

Streams are created, fed and closed only between steps, in the event loop's
thread, while no step runs: the engine needs no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..batch import BatchEngine, BatchedStream
from ..config import DEFAULT_DELAY_MS
from . import protocol
from .metrics import Metrics

log = logging.getLogger("voxtral.server")

CLOSE = object()  # outbox sentinel: the connection should end after what precedes it


@dataclass
class Settings:
    max_sessions: int = 16
    max_message_bytes: int = 1 << 20  # one WebSocket text message (base64 of ~24 s of audio)
    max_upload_bytes: int = 200 << 20  # one HTTP upload
    idle_timeout_seconds: float = 60.0
    lag_warn_seconds: float = 2.0
    max_backlog_seconds: float = 120.0
    feed_seconds_per_step: float = 0.16  # audio moved into one stream per step...
    max_ready_tokens: int = 4  # ... while fewer than this many of its tokens wait for the decoder
    max_pending_events: int = 4096
    max_pending_bytes: int = 4 << 20  # a session's events not yet sent, checked on every put
    default_delay_ms: int = DEFAULT_DELAY_MS


class TooManySessions(Exception):
    pass


def _event_bytes(event) -> int:
    return len(json.dumps(event, ensure_ascii=False)) if isinstance(event, dict) else 0


class Session:
    def __init__(self, kind: str, delay_ms: int, max_pending_bytes: int = Settings.max_pending_bytes):
        self.id = f"{kind}-{uuid.uuid4().hex[:12]}"
        self.kind = kind
        self.delay_ms = delay_ms
        self.inbox: deque[np.ndarray] = deque()
        self.inbox_samples = 0
        self.held: list[np.ndarray] = []  # audio sent after a final commit: the next utterance's
        self.active = False  # a commit started a transcription
        self.final = False  # ... and a final commit ended its audio
        self.stream: BatchedStream | None = None
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.pending_bytes = 0  # of the events in the outbox
        self.max_pending_bytes = max_pending_bytes
        self.on_overflow = None  # called once when pending_bytes passes max_pending_bytes
        self.text: list[str] = []
        self.token_events: list = []  # kept for HTTP answers (segments and word times)
        self.closed = False
        self.killed = asyncio.Event()  # the server ends this session (slow reader, internal error)
        self.last_lag_report = 0.0
        self.first_audio_at: float | None = None  # this utterance: when its first audio arrived
        self.audio_seconds = 0.0  # ... and how much has arrived
        self.done_count = 0

    @property
    def busy(self) -> bool:
        """Audio accepted that has not been transcribed yet."""
        return self.active and (self.final or self.inbox_samples > 0)

    def put(self, event) -> None:
        if self.closed:
            return
        self.pending_bytes += _event_bytes(event)
        self.outbox.put_nowait(event)
        if self.pending_bytes > self.max_pending_bytes and self.on_overflow is not None:
            overflow, self.on_overflow = self.on_overflow, None
            overflow(self)

    async def get(self):
        """The next event to send (the outbox's bytes are counted down)."""
        event = await self.outbox.get()
        self.pending_bytes -= _event_bytes(event)
        return event


class SessionManager:
    def __init__(self, model, settings: Settings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.engine = BatchEngine(model)
        self.sessions: dict[str, Session] = {}
        self.rate = model.sample_rate
        self._samples_per_token = model.config.audio.samples_per_token
        self._wake = asyncio.Event()
        self._to_close: list[BatchedStream] = []
        self._task: asyncio.Task | None = None
        self.iterations = 0  # batched steps run (an idle server runs none)

    # ---- lifecycle ----
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="voxtral-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.settings.max_sessions

    def open(self, kind: str) -> Session:
        if self.full:
            self.metrics.error(protocol.TOO_MANY_SESSIONS)
            raise TooManySessions(f"the server has its maximum of {self.settings.max_sessions} sessions")
        s = Session(kind, self.settings.default_delay_ms, self.settings.max_pending_bytes)
        s.on_overflow = lambda s: self.kill(s, protocol.SLOW_CONSUMER, f"more than {self.settings.max_pending_bytes} "
                                            "bytes of events are waiting to be read")
        self.sessions[s.id] = s
        self.metrics.add(sessions_total=1, sessions_active=1)
        return s

    def close(self, s: Session) -> None:
        if s.closed:
            return
        s.closed = True
        self.sessions.pop(s.id, None)
        if s.stream is not None:
            self._to_close.append(s.stream)
            s.stream = None
        s.inbox.clear()
        s.held.clear()
        self.metrics.add(sessions_active=-1)
        self._wake.set()

    # ---- client actions (event loop thread) ----
    def backlog_seconds(self, s: Session) -> float:
        queued = s.inbox_samples + sum(piece.shape[0] for piece in s.held)  # held: sent after a final commit
        if s.stream is not None:
            queued += s.stream.backlog_tokens * self._samples_per_token
        return queued / self.rate

    def append(self, s: Session, samples: np.ndarray, *, limit_backlog: bool = True) -> None:
        seconds = samples.shape[0] / self.rate
        if limit_backlog and self.backlog_seconds(s) + seconds > self.settings.max_backlog_seconds:
            self.metrics.add(dropped_audio_seconds=seconds)
            raise protocol.ProtocolError(
                f"server overloaded: {self.backlog_seconds(s):.1f} s of this session's audio are waiting "
                f"(limit {self.settings.max_backlog_seconds:g} s); this chunk of {seconds:.2f} s was not accepted",
                protocol.SERVER_OVERLOADED)
        self.metrics.add(audio_seconds_in=seconds)
        if s.first_audio_at is None:
            s.first_audio_at = time.monotonic()
        s.audio_seconds += seconds
        if s.final:
            s.held.append(samples)
            return
        s.inbox.append(samples)
        s.inbox_samples += samples.shape[0]
        self._wake.set()

    def commit(self, s: Session, final: bool) -> None:
        if s.final:
            return  # the current utterance is ending; a new one starts after its transcription.done
        s.active = True
        if final:
            s.final = True
        self._wake.set()

    # ---- the scheduler ----
    def _collect(self) -> list[tuple[BatchedStream, np.ndarray | None, bool]]:
        """Apply opens/closes and hand each stream its next slice of audio."""
        for stream in self._to_close:
            self.engine.close(stream)
        self._to_close.clear()
        budget = max(1, int(self.settings.feed_seconds_per_step * self.rate))
        work = []
        for s in self.sessions.values():
            if not s.active:
                continue
            if s.stream is None:
                s.stream = self.engine.open(s.delay_ms)
                s.text = []
            pieces, taken = [], 0
            # Encode ahead of the decoder only a little: an upload or a fast sender
            # then costs each step a bounded slice of encoder work, not seconds of it.
            ahead = s.stream._last_token is not None and not s.stream.ended_by_eos \
                and s.stream.backlog_tokens >= self.settings.max_ready_tokens
            while s.inbox and taken < budget and not ahead:
                piece = s.inbox.popleft()
                if taken + piece.shape[0] > budget:
                    s.inbox.appendleft(piece[budget - taken:])
                    piece = piece[: budget - taken]
                pieces.append(piece)
                taken += piece.shape[0]
            s.inbox_samples -= taken
            finish = s.final and not s.inbox and not s.stream.finished
            if pieces or finish:
                # the stream itself, not the session: a session may close while the step runs
                work.append((s.stream, np.concatenate(pieces) if pieces else None, finish))
        return work

    def _compute(self, work):
        """Worker thread: feed, then one batched step."""
        t0 = time.perf_counter()
        for stream, samples, finish in work:
            if samples is not None and samples.shape[0]:
                stream.feed(samples)
            if finish:
                stream.finish()
        rows0 = self.engine.rows_decoded
        events = self.engine.step()
        return events, time.perf_counter() - t0, self.engine.rows_decoded - rows0

    def _dispatch(self, events, seconds: float, rows: int) -> None:
        self.metrics.add(compute_seconds=seconds, batch_rows=rows, decoder_steps=1 if rows else 0)
        owner = {id(s.stream): s for s in self.sessions.values() if s.stream is not None}
        for stream, evs in events.items():
            s = owner.get(id(stream))
            if s is None:
                continue  # closed while the step ran
            text = "".join(e.text for e in evs)
            if s.kind == "http":
                s.token_events.extend(evs)
            self.metrics.add(tokens_out=sum(1 for e in evs if e.token_id >= 0))
            if evs:  # one delta per token, empty for control tokens, as vLLM sends them
                s.text.append(text)
                s.put(protocol.delta(text))
            if stream.completed:
                s.put(protocol.done("".join(s.text), len(stream.prompt), len(stream.tokens)))
                self.metrics.add(audio_seconds_decoded=stream.samples_in / self.rate)
                self.engine.close(stream)
                s.stream = None
                s.active = s.final = False
                s.first_audio_at, s.audio_seconds = None, 0.0
                s.done_count += 1
                for piece in s.held:  # audio that arrived after the final commit
                    s.inbox.append(piece)
                    s.inbox_samples += piece.shape[0]
                s.held = []
        self._watch_sessions()

    def _watch_sessions(self) -> None:
        now = time.monotonic()
        worst = 0.0
        for s in list(self.sessions.values()):
            backlog = self.backlog_seconds(s) if s.active else 0.0
            worst = max(worst, backlog)
            # Behind only if the audio came at (or below) real-time pace: a client
            # that sends a file at once has a backlog of its own making.
            paced = s.first_audio_at is not None and \
                s.audio_seconds <= now - s.first_audio_at + self.settings.lag_warn_seconds
            if s.kind == "ws" and paced and backlog > self.settings.lag_warn_seconds \
                    and now - s.last_lag_report > 1.0:
                s.last_lag_report = now
                s.put(protocol.lag(backlog))
                self.metrics.add(lag_events=1)
            if s.outbox.qsize() > self.settings.max_pending_events:
                self.kill(s, protocol.SLOW_CONSUMER,
                          f"more than {self.settings.max_pending_events} events are waiting to be read")
        self.metrics.backlog_seconds_max = worst

    def kill(self, s: Session, code: str, message: str) -> None:
        """End a session from the server side: its connection sends the error and closes."""
        self.metrics.error(code)
        while not s.outbox.empty():
            s.outbox.get_nowait()
        s.pending_bytes = 0
        s.put(protocol.error(message, code))
        s.put(CLOSE)
        s.killed.set()
        self.close(s)

    async def _run(self) -> None:
        while True:
            work = self._collect()
            if not work and not self.engine.has_work():
                self._wake.clear()  # nothing to do until a client sends, commits or leaves
                await self._wake.wait()
                continue
            self.iterations += 1
            try:
                events, seconds, rows = await asyncio.to_thread(self._compute, work)
            except Exception as exc:  # a bug must not take every session down with it
                log.exception("batch step failed")
                for s in list(self.sessions.values()):
                    if s.stream is not None:
                        self.kill(s, protocol.PROCESSING_ERROR, f"transcription failed: {exc}")
                for stream in list(self.engine.streams):
                    self.engine.close(stream)
                continue
            self._dispatch(events, seconds, rows)
            await asyncio.sleep(0)  # let connections run between steps
