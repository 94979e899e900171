"""The ASGI application (FastAPI): routes, authentication, error bodies.

All protocol framing is Starlette's and uvicorn's; this module only maps
requests and WebSocket messages onto ``SessionManager`` sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import VoxtralError
from . import openai_realtime, page, protocol
from .metrics import Metrics
from .responses import RESPONSE_FORMATS, render
from .sessions import CLOSE, SessionManager, Settings, TooManySessions

WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013
FORM_OVERHEAD_BYTES = 64 << 10  # multipart boundaries, part headers and the small fields beside the file
ACCEPTED_AUDIO = "WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF; M4A/MP4, WebM and others with ffmpeg installed"
_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only (int() also takes "4_8_0", " 480 " and other scripts)

log = logging.getLogger("voxtral.server")


@dataclass
class ServerConfig:
    model_names: list[str]  # /v1/models lists them all
    api_key: str | None = None
    settings: Settings = field(default_factory=Settings)
    max_audio_seconds: float = 3600.0  # decoded length of one upload
    decode_threads: int = 2  # uploads decoded at once, in a pool of their own
    allow_origins: tuple[str, ...] = ()  # browser origins (besides the server's own) that may call it


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
    scheme, _, key = (header or "").partition(" ")
    if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 7235)
        return False
    return hmac.compare_digest(key.strip().encode(), cfg.api_key.encode())


def _origin_allowed(cfg: ServerConfig, headers) -> bool:
    """A browser names the page's origin: its own server's, or one --allow-origin lists.
    Clients that are not browsers send no Origin."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host")
    if host is not None and origin in (f"http://{host}", f"https://{host}"):
        return True
    return origin in cfg.allow_origins or "*" in cfg.allow_origins


def create_app(model, cfg: ServerConfig) -> FastAPI:
    metrics = Metrics()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager = SessionManager(model, cfg.settings, metrics)
        manager.start()
        # uploads are decoded here, never in the executor the batch step runs in
        state["decoders"] = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="voxtral-decode")
        state["manager"] = manager
        app.state.manager = manager
        try:
            yield
        finally:
            await manager.stop()
            state["decoders"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="voxtral", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        metrics.error(exc.code)
        return JSONResponse(_error_body(str(exc), exc.code, exc.status, exc.param), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "invalid_request")
        metrics.error(code)
        return JSONResponse(
            _error_body(str(exc.detail), code, exc.status_code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        metrics.error("invalid_request")
        return JSONResponse(
            _error_body(f"invalid request: {exc.errors()}"[:500], "invalid_request", 422), status_code=422
        )

    @app.middleware("http")
    async def _auth_and_count(request: Request, call_next):
        route = request.url.path
        public = route == "/health" or page.is_public(route)
        if not _origin_allowed(cfg, request.headers):
            metrics.error("forbidden_origin")
            response = JSONResponse(
                _error_body(
                    f"origin {protocol.quote(request.headers['origin'])} is not allowed (--allow-origin)",
                    "forbidden_origin",
                    403,
                ),
                status_code=403,
            )
        elif not public and not _authorized(cfg, request.headers.get("authorization")):
            metrics.error("unauthorized")
            response = JSONResponse(
                _error_body("missing or wrong API key (Authorization: Bearer ...)", "unauthorized", 401),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            response = await call_next(request)
        known = route in ("/health", "/metrics", "/v1/models", "/v1/audio/transcriptions")
        metrics.request(route if known else "other", response.status_code)
        return response

    def check_model(name: str | None) -> None:
        if name is not None and name not in cfg.model_names:
            raise ApiError(
                404, f"The model `{protocol.quote(name)}` does not exist.", protocol.MODEL_NOT_FOUND, "model"
            )

    page.mount(app, cfg, model)  # GET /: the browser page

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models():
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "voxtral", "root": name}
                for name in cfg.model_names
            ],
        }

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    # ---- OpenAI transcriptions ----
    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        manager: SessionManager = state["manager"]
        # The session is taken before the body is read: an upload being received counts.
        try:
            session = manager.open("http")
        except TooManySessions as exc:
            raise ApiError(429, str(exc), protocol.TOO_MANY_SESSIONS) from None
        handed_over = False
        try:
            response = await _transcribe(request, session)
            handed_over = isinstance(response, StreamingResponse)  # it closes the session itself
            return response
        finally:
            if not handed_over:
                manager.close(session)

    async def _transcribe(request: Request, session):
        from ..audio import load_audio

        limits = cfg.settings
        manager: SessionManager = state["manager"]
        form = await _read_form(request, limits.max_upload_bytes)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "the form needs a 'file' part with the audio", "invalid_request", "file")
        if upload.size is not None and upload.size > limits.max_upload_bytes:
            raise ApiError(
                413,
                f"the upload is larger than {limits.max_upload_bytes} bytes (--max-upload-bytes)",
                "upload_too_large",
                "file",
            )
        check_model(_text_field(form, "model"))
        fmt = _text_field(form, "response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                "invalid_request",
                "response_format",
            )
        stream = (_text_field(form, "stream") or "false").lower() in ("true", "1")
        _check_temperature(_text_field(form, "temperature"))
        try:
            options = manager.session_options(
                delay_ms=_int_field(form, "transcription_delay_ms", None), kv_cache=_text_field(form, "kv_cache")
            )
        except VoxtralError as exc:
            raise ApiError(400, str(exc), "invalid_request", "transcription_delay_ms") from None
        await upload.seek(0)
        loop = asyncio.get_running_loop()
        try:
            samples = await loop.run_in_executor(
                state["decoders"],
                lambda: load_audio(upload.file, None, model.sample_rate, max_seconds=cfg.max_audio_seconds),
            )
        except VoxtralError as exc:
            status = 413 if "longer than" in str(exc) else 400
            raise ApiError(
                status,
                f"cannot read the audio: {exc} (accepted: {ACCEPTED_AUDIO}; at most "
                f"{cfg.max_audio_seconds:g} s, --max-audio-seconds)",
                protocol.INVALID_AUDIO,
                "file",
            ) from None
        finally:
            await upload.close()
        if session.closed:  # the client left while its audio was being decoded
            raise ApiError(499, "the client closed the request", "client_closed_request")
        session.options = options
        manager.append(session, samples, limit_backlog=False)
        manager.commit(session, final=True)
        duration = samples.shape[0] / model.sample_rate
        del samples
        language = _text_field(form, "language")
        if stream:
            return StreamingResponse(_sse(manager, session), media_type="text/event-stream")
        text = await _until_done_or_gone(request, session)
        body, media = render(fmt, text, session.token_events, duration, language)
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=media)

    # ---- realtime WebSocket ----
    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        if not _origin_allowed(cfg, ws.headers):
            metrics.error("forbidden_origin")
            await ws.close(code=WS_POLICY_VIOLATION)  # a page of another site, unless --allow-origin names it
            return
        if not _authorized(cfg, page.ws_authorization(ws)):
            metrics.error("unauthorized")
            await ws.close(code=WS_POLICY_VIOLATION)  # before accept: the client gets HTTP 403
            return
        await ws.accept(subprotocol=page.ws_subprotocol(ws))
        manager: SessionManager = state["manager"]
        if openai_realtime.requested(ws):  # OpenAI Realtime transcription (?intent=transcription)
            return await openai_realtime.serve(ws, manager, cfg, model)
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


def _int_field(form, name: str, default: int | None) -> int | None:
    value = _text_field(form, name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value) or len(value) > 12:
        raise ApiError(
            400, f"'{name}' must be an integer (ASCII digits), got {protocol.quote(value, 20)}", "invalid_request", name
        )
    return int(value)


def _check_temperature(value: str | None) -> None:
    if value is None:
        return
    try:
        number = float(value)
    except ValueError:
        number = None
    if number != 0.0:
        raise ApiError(
            400,
            f"temperature must be 0 (decoding is greedy; no sampling), got {protocol.quote(value, 20)}",
            "invalid_request",
            "temperature",
        )


async def _read_form(request: Request, max_upload_bytes: int):
    """The multipart form, refused on its Content-Length or, for a body that
    does not say (chunked), as soon as more than the limit has arrived."""
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    too_large = ApiError(
        413, f"the upload is larger than {max_upload_bytes} bytes (--max-upload-bytes)", "upload_too_large", "file"
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    received = 0
    receive = request.receive

    async def counted():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_large
        return message

    try:
        return await Request(request.scope, counted).form(max_files=1, max_fields=32)
    except ApiError:
        raise
    # malformed multipart: the parser's MultiPartException, which Request.form re-raises as a
    # 400 HTTPException when the scope has an app (other errors are not the client's form: not a 400)
    except (MultiPartException, StarletteHTTPException) as exc:
        raise ApiError(
            400, f"cannot parse the multipart form: {protocol.quote(str(exc), 200)}", "invalid_request"
        ) from None


async def _until_done_or_gone(request: Request, session) -> str:
    """The transcript; if the client disconnects first, the work stops (the caller closes the session)."""
    done = asyncio.ensure_future(_until_done(session))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not done.done():
        done.cancel()
        raise ApiError(499, "the client closed the request", "client_closed_request")
    return done.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _until_done(session) -> str:
    while True:
        event = await session.get()
        if event is CLOSE:
            raise ApiError(500, "the transcription was stopped", protocol.PROCESSING_ERROR)
        if event["type"] == "transcription.done":
            text: str = event["text"]
            return text
        if event["type"] == "error":
            raise ApiError(500, event["error"], event["code"])


async def _sse(manager: SessionManager, session):
    """OpenAI's streaming transcription events, then ``[DONE]``."""
    try:
        while True:
            event = await session.get()
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
        receiver = asyncio.create_task(self._receive(), name="receive")
        sender = asyncio.create_task(self._send(), name="send")
        killed = asyncio.create_task(self.session.killed.wait())
        tasks = {receiver, sender, killed}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        failed = False
        for task in (receiver, sender):
            if (
                task.done()
                and not task.cancelled()
                and task.exception() is not None
                and not isinstance(task.exception(), WebSocketDisconnect)
            ):
                # a bug, not the client: logged and counted, never a silent close
                log.error("session %s: %s failed", self.session.id, task.get_name(), exc_info=task.exception())
                self.manager.metrics.error(protocol.INTERNAL_ERROR)
                self.session.put(protocol.error("internal server error; the session ends", protocol.INTERNAL_ERROR))
                self.session.put(CLOSE)
                failed = True
        flush = (
            receiver.done()
            and not receiver.cancelled()
            and receiver.exception() is None
            and receiver.result() == "flush"
        )
        if (flush or failed or killed.done()) and not sender.done():
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
            event = await self.session.get()
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
                self._error(
                    "binary messages are not part of the protocol: send JSON text events", protocol.INVALID_EVENT
                )
                continue
            if len(text) > limits.max_message_bytes:
                self._error(
                    f"message of {len(text)} bytes is over the limit of {limits.max_message_bytes}",
                    protocol.MESSAGE_TOO_LARGE,
                )
                continue
            try:
                self._handle(protocol.parse(text))
            except protocol.ProtocolError as exc:
                self._error(str(exc), exc.code)
            except Exception:  # a bug: this message is answered with an error, the session goes on
                log.exception("session %s: message failed", self.session.id)
                self._error("internal server error handling this message", protocol.INTERNAL_ERROR)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        session = self.session
        if kind == "session.update":
            name = event.get("model")
            if name is not None and name not in self.cfg.model_names:
                raise protocol.ProtocolError(
                    f"The model `{protocol.quote(name)}` does not exist.", protocol.MODEL_NOT_FOUND
                )
            try:
                session.options = self.manager.session_options(  # applies from the next transcription on
                    session, delay_ms=event.get("transcription_delay_ms"), kv_cache=event.get("kv_cache")
                )
            except VoxtralError as exc:
                raise protocol.ProtocolError(str(exc), protocol.INVALID_EVENT) from None
        elif kind == "input_audio_buffer.append":
            self.manager.append(session, protocol.decode_pcm16(event["audio"]))
        else:
            self.manager.commit(session, bool(event.get("final", False)))
