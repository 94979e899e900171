"""OpenAI's Realtime API, transcription sessions, on ``/v1/realtime?intent=transcription``.

What OpenAI's clients send and expect (its published event reference; the
``openai`` package's ``realtime`` types are generated from it):
``session.update`` {session: {type: "transcription", audio.input: {format,
transcription, turn_detection, noise_reduction}, include}} (or the beta
``transcription_session.update``), ``input_audio_buffer.append`` {audio:
base64 PCM16 mono 24 kHz, or G.711 u-law/A-law 8 kHz}, ``input_audio_buffer.commit``
and ``.clear``; the server answers ``session.created``/``session.updated``,
``input_audio_buffer.speech_started``/``speech_stopped`` (server VAD),
``input_audio_buffer.committed``/``cleared``, ``conversation.item.added``/``done``
(beta: ``conversation.item.created``), ``conversation.item.input_audio_transcription.delta``
/ ``.completed`` / ``.failed`` and ``error`` {error: {type, code, message, param, event_id}}.

Each conversation item (one turn of speech) is its own ``SessionManager``
session: it is decoded while it is spoken, in the shared batch, and its
completed transcript is exactly offline transcription of the item's audio
(16 kHz, from the speech start minus the prefix padding to the stop). With
server VAD, the silence between turns is never given to the model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..audio import Resampler
from ..errors import VoxtralError
from ..vad import FRAME_SAMPLES, VadOptions, VoiceActivityDetector
from . import protocol
from .sessions import CLOSE, TooManySessions

WS_TRY_AGAIN_LATER = 1013
# GA format types and the beta's names for them; the G.711 codecs are 8 kHz.
_FORMATS = {
    "audio/pcm": "audio/pcm",
    "pcm16": "audio/pcm",
    "audio/pcmu": "audio/pcmu",
    "g711_ulaw": "audio/pcmu",
    "audio/pcma": "audio/pcma",
    "g711_alaw": "audio/pcma",
}
_PCM_RATES = (24000, 16000)  # OpenAI's only rate, and ours (no resampling)
# GA ``transcription.delay`` levels -> our delay (the model takes 80..2400 ms).
_DELAYS = {"minimal": 240, "low": 320, "medium": 480, "high": 960, "xhigh": 2400}
# semantic_vad's eagerness as a silence duration (OpenAI: low waits longest).
_EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this


def requested(ws) -> bool:
    """Is this WebSocket an OpenAI Realtime client (``?intent=transcription`` or a
    ``?model=`` in the URL), or a vLLM-protocol one that opts into server VAD
    (``?turn_detection=server_vad``)? Plain vLLM clients are served by app.py."""
    q = ws.query_params
    return q.get("intent") == "transcription" or "model" in q or q.get("turn_detection") == "server_vad"


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ClientError(Exception):
    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def _g711_table(alaw: bool) -> np.ndarray:
    """The 256 decoded values (ITU-T G.711) as float32 in [-1, 1]."""
    out = np.empty(256, dtype=np.float32)
    for b in range(256):
        if alaw:
            v = b ^ 0x55
            seg, mant = (v >> 4) & 7, v & 15
            mag = (mant << 4) + 8 if seg == 0 else ((mant << 4) + 0x108) << (seg - 1)
            out[b] = (mag if v & 0x80 else -mag) / 32768.0
        else:
            v = ~b & 0xFF
            mag = (((v & 15) << 3) + 0x84) << ((v >> 4) & 7)
            out[b] = ((0x84 - mag) if v & 0x80 else (mag - 0x84)) / 32768.0
    return out


_ULAW, _ALAW = _g711_table(False), _g711_table(True)


@dataclass
class Config:
    """The effective session configuration, as session.updated reports it."""

    format: str = "audio/pcm"
    rate: int = 24000
    model: str | None = None
    language: str | None = None
    prompt: str = ""
    delay_ms: int | None = None  # None: the server's default
    turn_detection: dict | None = field(
        default_factory=lambda: {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        }
    )

    @property
    def input_rate(self) -> int:
        return self.rate if self.format == "audio/pcm" else 8000

    def vad_options(self) -> VadOptions | None:
        td = self.turn_detection
        if td is None:
            return None
        return VadOptions(td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"])

    def ga(self) -> dict:
        fmt = {"type": self.format, "rate": self.rate} if self.format == "audio/pcm" else {"type": self.format}
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "include": [],
            "audio": {
                "input": {
                    "format": fmt,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection,
                    "transcription": {
                        "model": self.model,
                        "language": self.language,
                        "prompt": self.prompt,
                        "transcription_delay_ms": self.delay_ms,
                    },
                }
            },
        }

    def beta(self) -> dict:
        beta_format = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}[self.format]
        return {
            "object": "realtime.transcription_session",
            "modalities": ["text"],
            "input_audio_format": beta_format,
            "input_audio_transcription": {"model": self.model, "language": self.language, "prompt": self.prompt},
            "turn_detection": self.turn_detection,
            "input_audio_noise_reduction": None,
            "include": [],
            "client_secret": None,
        }


class _Item:
    """One conversation item: one utterance, one SessionManager session."""

    def __init__(self, session, start_sample: int):
        self.id = _id("item")
        self.session = session
        self.start_sample = start_sample
        self.samples = 0
        self.released = asyncio.Event()  # committed (its events may go out) or cleared
        self.cleared = False


class OpenAIRealtimeConnection:
    def __init__(self, ws, manager, cfg, model):
        self.ws, self.manager, self.cfg, self.model = ws, manager, cfg, model
        self.rate = model.sample_rate
        self.config = Config()
        self.beta = ws.headers.get("openai-beta", "").startswith("realtime")
        self.session_id = _id("sess")
        self.out: asyncio.Queue = asyncio.Queue()
        self.items: asyncio.Queue = asyncio.Queue()  # in creation order, for the pump
        self.live: list[_Item] = []  # items whose transcription has not ended
        self.item: _Item | None = None  # receiving audio now
        self.last_item_id: str | None = None
        self.audio_pos = 0  # 16 kHz samples received so far: the session's timeline
        self.buffer = np.zeros(0, dtype=np.float32)  # audio not in an item yet, ending at audio_pos
        self._set_audio()

    # ---- setup ----
    def _set_audio(self) -> None:
        self.resampler = Resampler(self.config.input_rate, self.rate)
        opts = self.config.vad_options()
        self.vad = VoiceActivityDetector(opts) if opts is not None else None
        self.vad_base = self.audio_pos  # the VAD counts from here

    def _send(self, event: dict) -> None:
        self.out.put_nowait({"event_id": _id("event"), **event})

    def _error(
        self,
        message: str,
        code: str,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        self.manager.metrics.error(code)
        self._send(
            {
                "type": "error",
                "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
            }
        )

    def _session_event(self, kind: str) -> None:
        if self.beta:
            self._send({"type": f"transcription_{kind}", "session": {"id": self.session_id, **self.config.beta()}})
        else:
            self._send({"type": kind, "session": {"id": self.session_id, **self.config.ga()}})

    async def run(self) -> None:
        self._session_event("session.created")
        writer = asyncio.create_task(self._write())
        tasks = {asyncio.create_task(self._receive()), asyncio.create_task(self._pump()), writer}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not writer.done():  # what is queued (a closing error) goes out first
                self.out.put_nowait(CLOSE)
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(writer), timeout=2.0)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for item in self.live:
                self.manager.close(item.session)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code=1000), timeout=1.0)

    async def _write(self) -> None:
        while True:
            event = await self.out.get()
            if event is CLOSE:
                return
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    # ---- client events ----
    async def _receive(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        limits = self.cfg.settings
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=limits.idle_timeout_seconds)
            except asyncio.TimeoutError:
                if self.live:
                    continue  # waiting for our own transcription is not idling
                self._error(f"no message for {limits.idle_timeout_seconds:g} s", protocol.IDLE_TIMEOUT)
                return
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._error("binary messages are not part of the protocol: send JSON text events", "invalid_event")
                continue
            if len(text) > limits.max_message_bytes:
                self._error(
                    f"message of {len(text)} bytes is over the limit of {limits.max_message_bytes}",
                    protocol.MESSAGE_TOO_LARGE,
                )
                continue
            try:
                event = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                self._error("Invalid JSON", "invalid_json")
                continue
            if not isinstance(event, dict):
                self._error("an event is a JSON object", "invalid_event")
                continue
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            try:
                await self._handle(event)
            except ClientError as exc:
                self._error(str(exc), exc.code, exc.param, event_id)
            except protocol.ProtocolError as exc:
                self._error(str(exc), exc.code, None, event_id)

    async def _handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            await self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            self._commit(manual=True)
        elif kind == "input_audio_buffer.clear":
            self._clear()
        elif kind == "session.update":
            self._update(event.get("session"), beta=False)
        elif kind == "transcription_session.update":
            self.beta = True
            self._update(event.get("session"), beta=True)
        else:
            raise ClientError(
                f"Unsupported event type for a transcription session: {str(kind)[:80]}", "unknown_event", "type"
            )

    def _update(self, s, *, beta: bool) -> None:
        if not isinstance(s, dict):
            raise ClientError("'session' must be an object", param="session")
        new = Config(**{k: getattr(self.config, k) for k in self.config.__dataclass_fields__})
        if beta:
            fmt, tr, has_td = s.get("input_audio_format"), s.get("input_audio_transcription"), "turn_detection" in s
            td = s.get("turn_detection")
            if fmt is not None:
                new.format = _FORMATS.get(fmt) if isinstance(fmt, str) else None
                if new.format is None:
                    raise ClientError(f"unsupported input_audio_format {fmt!r}", param="session.input_audio_format")
                new.rate = 24000
        else:
            if s.get("type", "transcription") != "transcription":
                raise ClientError(
                    "this server transcribes: only sessions of type 'transcription' (connect with "
                    "?intent=transcription)",
                    param="session.type",
                )
            audio = s.get("audio") or {}
            inp = (audio.get("input") if isinstance(audio, dict) else None) or {}
            if not isinstance(inp, dict):
                raise ClientError("'session.audio.input' must be an object", param="session.audio.input")
            fmt, tr, has_td, td = (
                inp.get("format"),
                inp.get("transcription"),
                "turn_detection" in inp,
                inp.get("turn_detection"),
            )
            if fmt is not None:
                kind = fmt.get("type", "audio/pcm") if isinstance(fmt, dict) else None
                if kind not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
                    raise ClientError(f"unsupported audio format {fmt!r}", param="session.audio.input.format")
                new.format = kind
                rate = fmt.get("rate", 24000) if kind == "audio/pcm" else 24000
                if rate not in _PCM_RATES:
                    raise ClientError(
                        f"audio/pcm rate must be one of {_PCM_RATES}, not {rate!r}",
                        param="session.audio.input.format.rate",
                    )
                new.rate = rate
        if tr is not None:
            self._transcription(new, tr)
        if has_td:
            new.turn_detection = self._turn_detection(td)
        audio_changed = (new.format, new.rate, new.turn_detection) != (
            self.config.format,
            self.config.rate,
            self.config.turn_detection,
        )
        self.config = new
        if audio_changed:
            self._set_audio()
        self._session_event("session.updated")

    def _transcription(self, new: Config, tr) -> None:
        if not isinstance(tr, dict):
            raise ClientError("'transcription' must be an object", param="transcription")
        model = tr.get("model")
        if model is not None and not isinstance(model, str):
            raise ClientError("'model' must be a string", param="transcription.model")
        new.model = model if model is not None else new.model  # any name: this server has one model
        new.language = tr.get("language") if isinstance(tr.get("language"), str) else new.language
        new.prompt = tr.get("prompt") if isinstance(tr.get("prompt"), str) else new.prompt
        delay = tr.get("transcription_delay_ms")
        if delay is None and tr.get("delay") is not None:
            delay = _DELAYS.get(tr["delay"])
            if delay is None:
                raise ClientError(f"'delay' must be one of {', '.join(_DELAYS)}", param="transcription.delay")
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, int):
                raise ClientError(
                    "'transcription_delay_ms' must be an integer", param="transcription.transcription_delay_ms"
                )
            try:
                self.model.config.delay_tokens(delay)
            except VoxtralError as exc:
                raise ClientError(str(exc), param="transcription.transcription_delay_ms") from None
            new.delay_ms = delay

    @staticmethod
    def _turn_detection(td) -> dict | None:
        if td is None:
            return None
        if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
            raise ClientError(
                "turn_detection must be null or of type server_vad (semantic_vad is served as server_vad)",
                param="turn_detection.type",
            )
        out = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
        if td["type"] == "semantic_vad":
            eagerness = td.get("eagerness", "auto")
            if eagerness not in _EAGERNESS_SILENCE_MS:
                raise ClientError("eagerness must be low, medium, high or auto", param="turn_detection.eagerness")
            out["silence_duration_ms"] = _EAGERNESS_SILENCE_MS[eagerness]
        for name in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
            if td.get(name) is not None:
                out[name] = td[name]
        try:
            VadOptions(out["threshold"], out["prefix_padding_ms"], out["silence_duration_ms"])
        except VoxtralError as exc:
            raise ClientError(str(exc), param="turn_detection") from None
        return out

    # ---- audio ----
    def _decode(self, audio) -> np.ndarray:
        if not isinstance(audio, str):
            raise ClientError(
                "input_audio_buffer.append needs 'audio': a base64 string", protocol.INVALID_AUDIO, "audio"
            )
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("Invalid audio data: not base64", protocol.INVALID_AUDIO, "audio") from None
        if self.config.format == "audio/pcm":
            if len(raw) % 2:
                raise ClientError(
                    f"Invalid audio data: {len(raw)} bytes is not a whole number of PCM16 samples",
                    protocol.INVALID_AUDIO,
                    "audio",
                )
            x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        else:
            x = (_ULAW if self.config.format == "audio/pcmu" else _ALAW)[np.frombuffer(raw, dtype=np.uint8)]
        return self.resampler(x)

    async def _append(self, audio) -> None:
        x = self._decode(audio)
        if not x.shape[0]:
            return
        self.audio_pos += x.shape[0]
        self.buffer = np.concatenate([self.buffer, x])
        if self.vad is None:  # manual turns: everything goes to the current item
            self._route(self.audio_pos)
            return
        frames = await asyncio.to_thread(self.vad.feed, x)
        for f in frames:
            if f.event == "speech_started":
                at = max(self.vad_base + f.event_sample, self.audio_pos - self.buffer.shape[0])
                self.buffer = self.buffer[self.buffer.shape[0] - (self.audio_pos - at) :]
                item = self._start_item(at)
                if item is not None:
                    self._send(
                        {
                            "type": "input_audio_buffer.speech_started",
                            "audio_start_ms": at * 1000 // self.rate,
                            "item_id": item.id,
                        }
                    )
            elif f.event == "speech_stopped":
                end = self.vad_base + f.event_sample
                item = self.item
                if item is not None:
                    self._route(end)
                    self._send(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": end * 1000 // self.rate,
                            "item_id": item.id,
                        }
                    )
                    self._commit(manual=False)
        if self.item is not None:
            self._route(self.audio_pos)
        else:  # keep what a speech start may reach back to: the padding and a partial VAD frame
            keep = self.vad.options.prefix_samples + 2 * FRAME_SAMPLES
            self.buffer = self.buffer[-keep:]

    def _start_item(self, at: int) -> _Item | None:
        try:
            session = self.manager.open("ws")
        except TooManySessions as exc:
            self._error(str(exc), protocol.TOO_MANY_SESSIONS, kind="server_error")
            return None
        if self.config.delay_ms is not None:
            session.options = self.manager.session_options(session, delay_ms=self.config.delay_ms)
        self.manager.commit(session, final=False)  # starts a transcription
        self.item = _Item(session, at)
        self.items.put_nowait(self.item)
        self.live.append(self.item)
        return self.item

    def _route(self, end: int) -> None:
        """Buffered audio up to timeline sample ``end`` -> the current item."""
        buffered_from = self.audio_pos - self.buffer.shape[0]
        n = max(0, min(end, self.audio_pos) - buffered_from)
        piece, self.buffer = self.buffer[:n], self.buffer[n:]
        if not n:
            return
        if self.item is None and self.vad is None:
            self._start_item(buffered_from)
        if self.item is None:
            return
        try:
            self.manager.append(self.item.session, piece)
        except protocol.ProtocolError as exc:  # server_overloaded: this piece is refused, and said so
            self._error(str(exc), exc.code, kind="server_error")
            return
        self.item.samples += n

    def _commit(self, *, manual: bool) -> None:
        if manual and self.vad is None:  # the whole buffer: the resampler's tail too, then a fresh one
            tail = self.resampler(np.zeros(0, dtype=np.float32), last=True)
            self.audio_pos += tail.shape[0]
            self.buffer = np.concatenate([self.buffer, tail])
            self.resampler = Resampler(self.config.input_rate, self.rate)
        item = self.item
        if item is not None and manual:
            self._route(self.audio_pos)
        if item is None or (manual and item.samples * 1000 < MIN_COMMIT_MS * self.rate):
            ms = 0 if item is None else item.samples * 1000 / self.rate
            raise ClientError(
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        self.item = None
        self._announce_commit(item)
        self.last_item_id = item.id
        self.manager.commit(item.session, final=True)
        item.released.set()
        if manual and self.vad is not None and self.vad.in_speech:
            self._start_item(self.audio_pos)  # the rest of this speech is the next item

    def _announce_commit(self, item: _Item) -> None:
        self._send({"type": "input_audio_buffer.committed", "item_id": item.id, "previous_item_id": self.last_item_id})
        item_body = {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._send(
            {
                "type": "conversation.item.created" if self.beta else "conversation.item.added",
                "previous_item_id": self.last_item_id,
                "item": item_body,
            }
        )

    def _clear(self) -> None:
        item, self.item = self.item, None
        if item is not None:
            item.cleared = True
            self.manager.close(item.session)
            item.released.set()
        self.buffer = self.buffer[:0]
        if self.vad is not None:
            self._set_audio()  # the detector starts over with the next audio
        self._send({"type": "input_audio_buffer.cleared"})

    # ---- transcription events, item by item ----
    async def _pump(self) -> None:
        while True:
            item = await self.items.get()
            held: list[dict] = []  # an item's events go out once it is committed
            done = False
            while not done:
                event = await _next(item.session.outbox, item.released)
                if item.cleared:
                    break
                if event is None:
                    continue
                if event is CLOSE:  # the server ended the session (slow reader...): end the connection
                    self.out.put_nowait(CLOSE)
                    return
                out, done = self._translate(item, event)
                held.extend(out)
                if item.released.is_set():
                    for e in held:
                        self._send(e)
                    held = []
            self.manager.close(item.session)
            self.live.remove(item)

    def _translate(self, item: _Item, event: dict) -> tuple[list[dict], bool]:
        """A SessionManager event -> OpenAI events, and whether the item is over."""
        kind = event["type"]
        if kind == "transcription.delta":
            if not event["delta"]:
                return [], False  # the model's control tokens
            return [
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item.id,
                    "content_index": 0,
                    "delta": event["delta"],
                }
            ], False
        if kind == "transcription.done":
            u, text = event["usage"], event["text"]
            out = [
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item.id,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": u["prompt_tokens"],
                        "output_tokens": u["completion_tokens"],
                        "total_tokens": u["total_tokens"],
                    },
                }
            ]
            if not self.beta:
                out.append(
                    {
                        "type": "conversation.item.done",
                        "item": {
                            "id": item.id,
                            "object": "realtime.item",
                            "type": "message",
                            "role": "user",
                            "status": "completed",
                            "content": [{"type": "input_audio", "transcript": text}],
                        },
                    }
                )
            return out, True
        if kind == "error":
            failed = {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item.id,
                "content_index": 0,
                "error": {"type": "server_error", "code": event["code"], "message": event["error"], "param": None},
            }
            return [failed], event["code"] != protocol.SERVER_OVERLOADED  # refused audio: the item goes on
        return [], False  # transcription.lag: not part of OpenAI's protocol


async def _next(queue: asyncio.Queue, released: asyncio.Event):
    """The queue's next item, or None when ``released`` is set first."""
    if released.is_set():
        return await queue.get()
    get = asyncio.ensure_future(queue.get())
    wait = asyncio.ensure_future(released.wait())
    try:
        await asyncio.wait({get, wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        wait.cancel()
    if get.done():
        return get.result()
    get.cancel()
    try:
        return await get
    except asyncio.CancelledError:
        return None


async def serve(ws, manager, cfg, model) -> None:
    """Run one accepted OpenAI Realtime transcription connection to its end."""
    if manager.full:
        await ws.send_text(
            json.dumps(
                {
                    "type": "error",
                    "event_id": _id("event"),
                    "error": {
                        "type": "server_error",
                        "code": protocol.TOO_MANY_SESSIONS,
                        "param": None,
                        "event_id": None,
                        "message": f"the server has its maximum of {cfg.settings.max_sessions} sessions",
                    },
                }
            )
        )
        await ws.close(code=WS_TRY_AGAIN_LATER)
        return
    if ws.query_params.get("turn_detection") == "server_vad" and "intent" not in ws.query_params:
        from .vllm_vad import VllmVadConnection as cls
    else:
        cls = OpenAIRealtimeConnection
    try:
        connection = cls(ws, manager, cfg, model)
    except VoxtralError as exc:  # no VAD package on this server
        await ws.send_text(
            json.dumps(
                {
                    "type": "error",
                    "event_id": _id("event"),
                    "error": {
                        "type": "server_error",
                        "code": "vad_unavailable",
                        "param": None,
                        "event_id": None,
                        "message": str(exc),
                    },
                }
            )
        )
        await ws.close(code=1011)
        return
    await connection.run()
