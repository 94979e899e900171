"""The realtime WebSocket protocol, as vLLM serves it for Voxtral Realtime
(vllm/entrypoints/openai/realtime/protocol.py): event names and fields.

Client -> server: ``session.update`` {model, transcription_delay_ms and kv_cache (ours)},
``input_audio_buffer.append`` {audio: base64 PCM16 mono 16 kHz},
``input_audio_buffer.commit`` {final: bool}.
Server -> client: ``session.created`` {id, created}, ``transcription.delta``
{delta} (one per decoded token, '' for the model's control tokens, as vLLM
streams them), ``transcription.done`` {text, usage}, ``error`` {error, code}; and
ours, ignored by clients that do not know it: ``transcription.lag``
{backlog_seconds} when the server falls behind the audio.

Parsing is strict: every malformed message becomes a ``ProtocolError`` with
a code, which the connection sends back as an ``error`` event.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

import numpy as np

# Error codes (the first five are vLLM's own).
INVALID_JSON = "invalid_json"
INVALID_AUDIO = "invalid_audio"
UNKNOWN_EVENT = "unknown_event"
MODEL_NOT_FOUND = "model_not_found"
PROCESSING_ERROR = "processing_error"
INVALID_EVENT = "invalid_event"
MESSAGE_TOO_LARGE = "message_too_large"
TOO_MANY_SESSIONS = "too_many_sessions"
IDLE_TIMEOUT = "idle_timeout"
SERVER_OVERLOADED = "server_overloaded"
SLOW_CONSUMER = "slow_consumer"
SHUTTING_DOWN = "shutting_down"
INTERNAL_ERROR = "internal_error"

ECHO_CHARS = 80  # of a client's string quoted back in an error


def quote(value: object, limit: int = ECHO_CHARS) -> str:
    """A client-supplied value for an error message: at most ``limit``
    characters, valid UTF-8 (a lone surrogate cannot be sent as text)."""
    text = value if isinstance(value, str) else repr(value)
    short = text[:limit] + ("..." if len(text) > limit else "")
    return short.encode("utf-8", "replace").decode("utf-8")


CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit")


class ProtocolError(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def session_created() -> dict[str, Any]:
    return {"type": "session.created", "id": f"sess-{uuid.uuid4().hex}", "created": int(time.time())}


def delta(text: str) -> dict[str, Any]:
    return {"type": "transcription.delta", "delta": text}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def done(text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"type": "transcription.done", "text": text, "usage": usage(prompt_tokens, completion_tokens)}


def error(message: str, code: str) -> dict[str, Any]:
    return {"type": "error", "error": message, "code": code}


def lag(backlog_seconds: float) -> dict[str, Any]:
    return {"type": "transcription.lag", "backlog_seconds": round(backlog_seconds, 3)}


def parse(message: str) -> dict[str, Any]:
    """A client message -> its event dict (type checked, fields validated)."""
    try:
        event = json.loads(message)
    except (ValueError, RecursionError):  # JSONDecodeError, and ValueError for integers past 4300 digits
        raise ProtocolError("Invalid JSON", INVALID_JSON) from None
    if not isinstance(event, dict):
        raise ProtocolError("an event is a JSON object", INVALID_EVENT)
    kind = event.get("type")
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(f"Unknown event type: {quote(kind)}", UNKNOWN_EVENT)
    if kind == "input_audio_buffer.append":
        if not isinstance(event.get("audio"), str):
            raise ProtocolError("input_audio_buffer.append needs 'audio': a base64 string", INVALID_AUDIO)
    elif kind == "input_audio_buffer.commit":
        if not isinstance(event.get("final", False), bool):
            raise ProtocolError("'final' must be true or false", INVALID_EVENT)
    elif kind == "session.update":
        model = event.get("model")
        if model is not None and not isinstance(model, str):
            raise ProtocolError("'model' must be a string", INVALID_EVENT)
        delay = event.get("transcription_delay_ms")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int)):
            raise ProtocolError("'transcription_delay_ms' must be an integer", INVALID_EVENT)
        if not isinstance(event.get("kv_cache", ""), str):
            raise ProtocolError("'kv_cache' must be a string", INVALID_EVENT)
    return event


def decode_pcm16(audio: str) -> np.ndarray:
    """base64 PCM16 little-endian mono -> int16 samples."""
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("Invalid audio data: not base64", INVALID_AUDIO) from None
    if len(raw) == 0:
        raise ProtocolError("Invalid audio data: empty", INVALID_AUDIO)
    if len(raw) % 2:
        raise ProtocolError(
            f"Invalid audio data: {len(raw)} bytes is not a whole number of PCM16 samples", INVALID_AUDIO
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)
