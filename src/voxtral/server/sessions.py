"""Sessions and the batch scheduler.

Every session (a WebSocket connection or an HTTP transcription) owns an
inbox of received audio and an outbox of events. One scheduler task drives
the model's ``Engine`` over every session's stream: it moves audio from the
inboxes into the streams (at most ``feed_seconds_per_step``, or the
session's ``draft_steps`` tokens of audio if that is more, per stream and
step, so a long upload or a client sending faster than real time cannot
starve the others while a session that fell behind can catch up in drafted
passes; and only while fewer than ``max_ready_tokens`` (or ``draft_steps``)
of its steps wait for the decoder), runs one engine step in the engine's own
thread (one worker, never behind upload decoding), and puts the resulting
events into the outboxes. It never awaits a client: a slow reader only grows
its own outbox (and is cut off past ``max_pending_events``). A session whose
own work fails (its audio, its stream) is ended with an error event; the
others go on. When a session's backlog (audio received but not yet
decodable, beyond what the delay itself holds back) passes
``lag_warn_seconds`` it gets a ``transcription.lag`` event; past
``max_backlog_seconds`` further audio is refused with an error event and
counted as dropped, never dropped silently.

Streams are created, fed and closed only between steps, in the event loop's
thread, while no step runs: the engine needs no locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..options import Options
from ..stream import Stream
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
    feed_seconds_per_step: float = 0.16  # audio moved into one stream per step (or draft_steps tokens' worth)...
    max_ready_tokens: int = 4  # ... while fewer than this many of its steps (or draft_steps) wait for the decoder
    max_pending_events: int = 4096
    options: Options | None = None  # every session's defaults (None: the model's); a session may change some
    max_pending_bytes: int = 4 << 20  # a session's events not yet sent, checked on every put


def token_texts(events) -> list[str]:
    """The text of each token among ``events``, a text-only event joined to the token before it."""
    texts: list[str] = []
    for e in events:
        if e.token_id < 0 and texts:
            texts[-1] += e.text
        else:
            texts.append(e.text)
    return texts


class TooManySessions(Exception):
    pass


def _event_bytes(event) -> int:
    return len(json.dumps(event, ensure_ascii=False)) if isinstance(event, dict) else 0


class Session:
    def __init__(self, kind: str, options: Options, max_pending_bytes: int = Settings.max_pending_bytes):
        self.id = f"{kind}-{uuid.uuid4().hex[:12]}"
        self.kind = kind
        self.options = options  # a change applies from the next transcription on
        self.inbox: deque[np.ndarray] = deque()
        self.inbox_samples = 0
        self.held: list[np.ndarray] = []  # audio sent after a final commit: the next utterance's
        self.active = False  # a commit started a transcription
        self.final = False  # ... and a final commit ended its audio
        self.stream: Stream | None = None
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
        self.engine = model.engine
        self.options = settings.options if settings.options is not None else model.options
        model.start_state(self.options.kv_cache)  # computed here, not in a session's first step
        self.sessions: dict[str, Session] = {}
        self.streams: list[Stream] = []  # the streams the engine steps
        self.rate = model.sample_rate
        self._samples_per_token = model.config.audio.samples_per_token
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        # The engine's own thread: a step never waits behind other work (uploads decode elsewhere).
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voxtral-engine")
        self.iterations = 0  # engine steps run (an idle server runs none)

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
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.settings.max_sessions

    def open(self, kind: str) -> Session:
        if self.full:
            self.metrics.error(protocol.TOO_MANY_SESSIONS)
            raise TooManySessions(f"the server has its maximum of {self.settings.max_sessions} sessions")
        s = Session(kind, self.options, self.settings.max_pending_bytes)
        s.on_overflow = lambda s: self.kill(
            s,
            protocol.SLOW_CONSUMER,
            f"more than {self.settings.max_pending_bytes} bytes of events are waiting to be read",
        )
        self.sessions[s.id] = s
        self.metrics.add(sessions_total=1, sessions_active=1)
        return s

    def close(self, s: Session) -> None:
        if s.closed:
            return
        s.closed = True
        self.sessions.pop(s.id, None)
        if s.stream is not None:
            self._drop(s.stream)
            s.stream = None
        s.inbox.clear()
        s.held.clear()
        self.metrics.add(sessions_active=-1)
        self._wake.set()

    def session_options(self, s: Session | None = None, **changes) -> Options:
        """A session's options (default: the server's) with ``changes`` (None: unchanged), checked
        for this model; raises UsageError. Sessions of any options share the engine's passes."""
        options = (s.options if s is not None else self.options).replace(**changes)
        self.model.config.delay_tokens(options.delay_ms)  # the model's own step
        return options

    def _drop(self, stream: Stream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)

    # ---- client actions (event loop thread) ----
    def backlog_seconds(self, s: Session) -> float:
        """Audio received that could be decoded but is not yet: the inbox, the
        audio sent after a final commit (the next utterance's) and the steps the
        stream could take now (not what the delay holds back)."""
        queued = s.inbox_samples + sum(piece.shape[0] for piece in s.held)
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
                protocol.SERVER_OVERLOADED,
            )
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
    def _collect(self) -> list[tuple[Session, Stream, np.ndarray | None, bool]]:
        """Open streams and hand each its next slice of audio."""
        work = []
        for s in self.sessions.values():
            if not s.active:
                continue
            if s.stream is None:
                try:
                    s.stream = Stream(self.model, s.options)
                except Exception as exc:  # noqa: BLE001 - this session's options; the others go on
                    self._fail(s, exc)
                    continue
                self.streams.append(s.stream)
                s.text = []
            # A stream that fell behind gets up to draft_steps tokens' audio per
            # step, so one pass can verify that many drafted steps and it catches up.
            seconds = max(self.settings.feed_seconds_per_step, s.options.draft_steps * s.stream.seconds_per_token)
            budget = max(1, int(seconds * self.rate))
            pieces, taken = [], 0
            # Encode ahead of the decoder only a little: an upload or a fast sender
            # then costs each step a bounded slice of encoder work, not seconds of it.
            ahead = (
                s.stream.started
                and not s.stream.ended_by_eos
                and s.stream.backlog_tokens >= max(self.settings.max_ready_tokens, s.options.draft_steps)
            )
            while s.inbox and taken < budget and not ahead:
                piece = s.inbox.popleft()
                if taken + piece.shape[0] > budget:
                    s.inbox.appendleft(piece[budget - taken :])
                    piece = piece[: budget - taken]
                pieces.append(piece)
                taken += piece.shape[0]
            s.inbox_samples -= taken
            finish = s.final and not s.inbox and not s.stream.finished
            if pieces or finish:
                work.append((s, s.stream, np.concatenate(pieces) if pieces else None, finish))
        return work

    def _compute(self, work, streams: list[Stream]):
        """Engine thread: each session's audio into its stream, then one engine
        step. A session whose own part fails is reported, not the whole step."""
        t0 = time.perf_counter()
        failed: dict[Stream, Exception] = {}
        for _, stream, samples, finish in work:
            try:
                if samples is not None and samples.shape[0]:
                    stream.push(samples)
                if finish:
                    stream.end()
            except Exception as exc:  # noqa: BLE001 - isolated to this session
                failed[stream] = exc
        streams = [st for st in streams if st not in failed]
        passes, rows = self.engine.passes, self.engine.rows
        events = self.engine.step(streams, failed)
        return events, failed, time.perf_counter() - t0, self.engine.rows - rows, self.engine.passes - passes

    def _fail(self, s: Session, exc: Exception) -> None:
        log.error("session %s failed: %s", s.id, exc, exc_info=exc)
        self.kill(s, protocol.PROCESSING_ERROR, f"transcription failed: {exc}")

    def _dispatch(self, events, seconds: float, rows: int, passes: int) -> None:
        self.metrics.add(compute_seconds=seconds, batch_rows=rows, decoder_steps=passes)
        owner = {id(s.stream): s for s in self.sessions.values() if s.stream is not None}
        for stream, evs in events.items():
            s = owner.get(id(stream))
            if s is None:
                continue  # closed while the step ran
            if s.kind == "http":
                s.token_events.extend(evs)
            self.metrics.add(tokens_out=sum(1 for e in evs if e.token_id >= 0))
            # One delta per token, empty for control tokens, as vLLM sends them: a
            # pass that verified several drafted steps sends several (clients count
            # tokens by deltas). A text-only event (the tail of a UTF-8 character)
            # belongs to the token before it.
            for text in token_texts(evs):
                s.text.append(text)
                s.put(protocol.delta(text))
            if stream.completed:
                s.put(protocol.done("".join(s.text), len(stream.prompt), len(stream.tokens)))
                self.metrics.add(
                    audio_seconds_decoded=stream.samples_in / self.rate,
                    stream_passes=stream.passes,
                    stream_steps=len(stream.tokens),
                )
                self.metrics.add_drafts(stream.drafter.stats)
                self._drop(stream)
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
            paced = (
                s.first_audio_at is not None
                and s.audio_seconds <= now - s.first_audio_at + self.settings.lag_warn_seconds
            )
            # after a final commit the rest is the schedule's own padding, not live audio falling behind
            if (
                s.kind == "ws"
                and paced
                and not s.final
                and backlog > self.settings.lag_warn_seconds
                and now - s.last_lag_report > 1.0
            ):
                s.last_lag_report = now
                s.put(protocol.lag(backlog))
                self.metrics.add(lag_events=1)
            if s.outbox.qsize() > self.settings.max_pending_events:
                self.kill(
                    s,
                    protocol.SLOW_CONSUMER,
                    f"more than {self.settings.max_pending_events} events are waiting to be read",
                )
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
        loop = asyncio.get_running_loop()
        while True:
            work = self._collect()
            if not work and not any(st.has_work for st in self.streams):
                self._wake.clear()  # nothing to do until a client sends, commits or leaves
                await self._wake.wait()
                continue
            self.iterations += 1
            streams = list(self.streams)
            try:
                events, failed, seconds, rows, passes = await loop.run_in_executor(
                    self._executor, self._compute, work, streams
                )
            except Exception as exc:  # the shared pass itself failed: no session's result can be trusted
                log.exception("engine step failed")
                for s in list(self.sessions.values()):
                    if s.stream is not None:
                        self.kill(s, protocol.PROCESSING_ERROR, f"transcription failed: {exc}")
                self.streams.clear()
                continue
            owner = {id(s.stream): s for s in self.sessions.values() if s.stream is not None}
            for stream, exc in failed.items():
                if id(stream) in owner:
                    self._fail(owner[id(stream)], exc)
            self._dispatch(events, seconds, rows, passes)
            await asyncio.sleep(0)  # let connections run between steps
