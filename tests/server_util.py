"""A real server (uvicorn on a free port, in a thread) for the server tests,
and small realtime-protocol client helpers."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model, *, api_key=None, names=("voxtral-test",), **settings):
    import uvicorn

    from voxtral.server.app import ServerConfig, create_app
    from voxtral.server.sessions import Settings

    cfg = ServerConfig(model_names=list(names), api_key=api_key, settings=Settings(**settings))
    app = create_app(model, cfg)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=2 * cfg.settings.max_message_bytes + 4096
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    server.base_url = f"http://127.0.0.1:{port}"
    server.ws_url = f"ws://127.0.0.1:{port}/v1/realtime"
    server.port = port
    server.app = app
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def append(audio: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})


def recv_json(ws, timeout=60.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def until(ws, kind: str, timeout=120.0) -> tuple[dict, list[dict]]:
    """Read events until one of type ``kind``; returns it and everything before."""
    seen = []
    while True:
        event = recv_json(ws, timeout)
        if event["type"] == kind:
            return event, seen
        seen.append(event)


def transcribe_ws(
    url: str, audio: bytes, *, chunk_bytes=2560, pace=0.0, model=None, delay_ms=None, headers=None, kv_cache=None
) -> tuple[dict, list[dict]]:
    """One utterance over /v1/realtime: (the transcription.done event, all events before it)."""
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers, max_size=None) as ws:
        created = recv_json(ws)
        assert created["type"] == "session.created"
        update = {"type": "session.update"}
        if model:
            update["model"] = model
        if delay_ms is not None:
            update["transcription_delay_ms"] = delay_ms
        if kv_cache is not None:
            update["kv_cache"] = kv_cache
        ws.send(json.dumps(update))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for start in range(0, len(audio), chunk_bytes):
            ws.send(append(audio[start : start + chunk_bytes]))
            if pace:
                time.sleep(pace)
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        return until(ws, "transcription.done")
