"""The ASGI application (FastAPI): routes, authentication, error bodies.

All protocol framing is Starlette's and uvicorn's; this module only maps
requests and WebSocket messages onto ``SessionManager`` sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import VoxtralError
from . import protocol
from .metrics import Metrics
from .responses import RESPONSE_FORMATS, render
from .sessions import CLOSE, SessionManager, Settings, TooManySessions

WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


@dataclass
class ServerConfig:
    model_names: list[str]  # the first is the one /v1/models lists
    api_key: str | None = None
    settings: Settings = field(default_factory=Settings)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def _error_body(message: str, code: str, status: int, param: str | None = None) -> dict[str, Any]:
    # OpenAI's error shape, which its client turns into typed exceptions.
    return {"error": {"message": message, "type": code, "param": param, "code": status}}


def _authorized(cfg: ServerConfig, header: str | None) -> bool:
    if cfg.api_key is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), cfg.api_key.encode())


def create_app(model, cfg: ServerConfig) -> FastAPI:
    metrics = Metrics()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager = SessionManager(model, cfg.settings, metrics)
        manager.start()
        state["manager"] = manager
        app.state.manager = manager
        try:
            yield
        finally:
            await manager.stop()

    app = FastAPI(title="voxtral", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        metrics.error(exc.code)
        return JSONResponse(_error_body(str(exc), exc.code, exc.status, exc.param), status_code=exc.status)

    @app.middleware("http")
    async def _auth_and_count(request: Request, call_next):
        route = request.url.path
        if route != "/health" and not _authorized(cfg, request.headers.get("authorization")):
            metrics.error("unauthorized")
            response = JSONResponse(_error_body("missing or wrong API key (Authorization: Bearer ...)",
                                                "unauthorized", 401), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        known = route in ("/health", "/metrics", "/v1/models", "/v1/audio/transcriptions")
        metrics.request(route if known else "other", response.status_code)
        return response

    def check_model(name: str | None) -> None:
        if name is not None and name not in cfg.model_names:
            raise ApiError(404, f"The model `{name}` does not exist.", protocol.MODEL_NOT_FOUND, "model")

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models():
        created = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "voxtral", "root": name}
            for name in cfg.model_names[:1]]}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    # ---- OpenAI transcriptions ----
    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        from ..audio import load_audio

        limits = cfg.settings
        manager: SessionManager = state["manager"]
        if manager.full:  # before reading a large body for nothing
            raise ApiError(429, f"the server has its maximum of {limits.max_sessions} sessions",
                           protocol.TOO_MANY_SESSIONS)
        try:
            form = await request.form(max_files=1, max_fields=32)
        except Exception as exc:  # noqa: BLE001  malformed multipart (the parser raises many kinds)
            raise ApiError(400, f"cannot parse the multipart form: {exc}", "invalid_request") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "the form needs a 'file' part with the audio", "invalid_request", "file")
        check_model(_text_field(form, "model"))
        fmt = _text_field(form, "response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                           "invalid_request", "response_format")
        stream = (_text_field(form, "stream") or "false").lower() in ("true", "1")
        delay_ms = _int_field(form, "transcription_delay_ms", limits.default_delay_ms)
        try:
            model.config.delay_tokens(delay_ms)
        except VoxtralError as exc:
            raise ApiError(400, str(exc), "invalid_request", "transcription_delay_ms") from None
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise ApiError(413, f"the upload is larger than {limits.max_upload_bytes} bytes", "upload_too_large",
                           "file")
        try:
            samples = await asyncio.to_thread(load_audio, data, None, model.sample_rate)
        except VoxtralError as exc:
            raise ApiError(400, f"cannot read the audio: {exc} (send a WAV file)", protocol.INVALID_AUDIO,
                           "file") from None
        try:
            session = manager.open("http")
        except TooManySessions as exc:
            raise ApiError(429, str(exc), protocol.TOO_MANY_SESSIONS) from None
        session.delay_ms = delay_ms
        manager.append(session, samples, limit_backlog=False)
        manager.commit(session, final=True)
        duration = samples.shape[0] / model.sample_rate
        language = _text_field(form, "language")
        if stream:
            return StreamingResponse(_sse(manager, session), media_type="text/event-stream")
        try:
            text = await _until_done(session)
        finally:
            manager.close(session)
        body, media = render(fmt, text, session.token_events, duration, language)
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=media)

    # ---- realtime WebSocket ----
    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        if not _authorized(cfg, ws.headers.get("authorization")):
            metrics.error("unauthorized")
            await ws.close(code=WS_POLICY_VIOLATION)  # before accept: the client gets HTTP 403
            return
        await ws.accept()
        manager: SessionManager = state["manager"]
        try:
            session = manager.open("ws")
        except TooManySessions as exc:
            await ws.send_text(json.dumps(protocol.error(str(exc), protocol.TOO_MANY_SESSIONS)))
            await ws.close(code=WS_TRY_AGAIN_LATER)
            return
        session.put(protocol.session_created())
        connection = _Connection(ws, session, manager, cfg, model)
        try:
            await connection.run()
        finally:
            manager.close(session)

    return app


def _text_field(form, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a text field", "invalid_request", name)
    return value


def _int_field(form, name: str, default: int) -> int:
    value = _text_field(form, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer", "invalid_request", name) from None


async def _until_done(session) -> str:
    while True:
        event = await session.outbox.get()
        if event is CLOSE:
            raise ApiError(500, "the transcription was stopped", protocol.PROCESSING_ERROR)
        if event["type"] == "transcription.done":
            return str(event["text"])
        if event["type"] == "error":
            raise ApiError(500, event["error"], event["code"])


async def _sse(manager: SessionManager, session):
    """OpenAI's streaming transcription events, then ``[DONE]``."""
    try:
        while True:
            event = await session.outbox.get()
            if event is CLOSE:
                break
            if event["type"] == "transcription.delta":
                if not event["delta"]:
                    continue
                out = {"type": "transcript.text.delta", "delta": event["delta"]}
            elif event["type"] == "transcription.done":
                out = {"type": "transcript.text.done", "text": event["text"], "usage": event["usage"]}
            elif event["type"] == "error":
                out = {"error": {"message": event["error"], "type": event["code"], "code": 500}}
            else:
                continue
            yield f"data: {json.dumps(out, ensure_ascii=False)}\n\n"
            if out.get("type") == "transcript.text.done" or "error" in out:
                break
        yield "data: [DONE]\n\n"
    finally:
        manager.close(session)


class _Connection:
    """One realtime WebSocket: a receive loop, a send loop, and the session's kill switch."""

    def __init__(self, ws: WebSocket, session, manager: SessionManager, cfg: ServerConfig, model):
        self.ws, self.session, self.manager, self.cfg, self.model = ws, session, manager, cfg, model

    async def run(self) -> None:
        receiver = asyncio.create_task(self._receive())
        sender = asyncio.create_task(self._send())
        killed = asyncio.create_task(self.session.killed.wait())
        tasks = {receiver, sender, killed}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        flush = receiver.done() and not receiver.cancelled() and receiver.exception() is None \
            and receiver.result() == "flush"
        if (flush or killed.done()) and not sender.done():
            # deliver the closing error event first (a reader that does not read gets cut after 2 s)
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(sender), timeout=2.0)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code=1000), timeout=1.0)

    async def _send(self) -> None:
        while True:
            event = await self.session.outbox.get()
            if event is CLOSE:
                return
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    def _error(self, message: str, code: str) -> None:
        self.manager.metrics.error(code)
        self.session.put(protocol.error(message, code))

    async def _receive(self) -> str:
        limits = self.cfg.settings
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=limits.idle_timeout_seconds)
            except asyncio.TimeoutError:
                if self.session.busy:
                    continue  # waiting for our own transcription is not idling
                self._error(f"no message for {limits.idle_timeout_seconds:g} s", protocol.IDLE_TIMEOUT)
                self.session.put(CLOSE)
                return "flush"
            except WebSocketDisconnect:
                return "gone"
            if message["type"] == "websocket.disconnect":
                return "gone"
            text = message.get("text")
            if text is None:
                self._error("binary messages are not part of the protocol: send JSON text events",
                            protocol.INVALID_EVENT)
                continue
            if len(text) > limits.max_message_bytes:
                self._error(f"message of {len(text)} bytes is over the limit of {limits.max_message_bytes}",
                            protocol.MESSAGE_TOO_LARGE)
                continue
            try:
                self._handle(protocol.parse(text))
            except protocol.ProtocolError as exc:
                self._error(str(exc), exc.code)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        session = self.session
        if kind == "session.update":
            name = event.get("model")
            if name is not None and name not in self.cfg.model_names:
                raise protocol.ProtocolError(f"The model `{name}` does not exist.", protocol.MODEL_NOT_FOUND)
            delay = event.get("transcription_delay_ms")
            if delay is not None:
                try:
                    self.model.config.delay_tokens(delay)
                except VoxtralError as exc:
                    raise protocol.ProtocolError(str(exc), protocol.INVALID_EVENT) from None
                session.delay_ms = delay  # applies from the next transcription on
        elif kind == "input_audio_buffer.append":
            self.manager.append(session, protocol.decode_pcm16(event["audio"]))
        else:
            self.manager.commit(session, bool(event.get("final", False)))
