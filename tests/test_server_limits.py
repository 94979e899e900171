"""The server bounds every resource a client can make it spend (issue 15):
decoded upload length, upload bytes, pending output, held audio, compressed
messages, slow or idle connections, connection count, work of clients that
left, and shutdown time; bad input gets a typed error, never a silent close.
Every attack goes to a 127.0.0.1 server started here, bounded in count and time."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")

import voxtral  # noqa: E402
from server_util import append, free_port, pcm16, recv_json, until  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@contextmanager
def limited_server(
    model, *, http=None, api_key=None, names=("voxtral-test",), max_audio_seconds=3600.0, allow_origins=(), **settings
):
    """The server as ``serve`` builds it (transport.build_server), on a free loopback port."""
    from voxtral.server.app import ServerConfig, create_app
    from voxtral.server.sessions import Settings
    from voxtral.server.transport import HttpLimits, build_server

    cfg = ServerConfig(
        model_names=list(names),
        api_key=api_key,
        settings=Settings(**settings),
        max_audio_seconds=max_audio_seconds,
        allow_origins=tuple(allow_origins),
    )
    app = create_app(model, cfg)
    port = free_port()
    server = build_server(
        app,
        host="127.0.0.1",
        port=port,
        limits=http or HttpLimits(),
        max_message_bytes=cfg.settings.max_message_bytes,
        log_level="warning",
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    server.base_url = f"http://127.0.0.1:{port}"
    server.ws_url = f"ws://127.0.0.1:{port}/v1/realtime"
    server.port, server.app, server.thread = port, app, thread
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wav(seconds: float, rate: int = 16000, noise: bool = True) -> bytes:
    import soundfile

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(int(seconds * rate)) * 0.1 if noise else np.zeros(int(seconds * rate))).astype("f4")
    buf = io.BytesIO()
    soundfile.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _flac_silence(seconds: float) -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(int(seconds * 16000), dtype="f4"), 16000, format="FLAC")
    return buf.getvalue()


def _connect(srv, **kw):
    from websockets.sync.client import connect

    return connect(srv.ws_url, max_size=None, **kw)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


# ---- 1: decoded length bounded while decoding ----
def test_upload_decoded_length_is_bounded(model):
    flac = _flac_silence(120.0)  # a few KB that decode to 120 s
    assert len(flac) < 100_000
    with limited_server(model, max_audio_seconds=30.0) as srv:
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.flac", flac)}, timeout=60)
        assert r.status_code == 413, r.text
        assert "30 s" in r.json()["error"]["message"] and "--max-audio-seconds" in r.json()["error"]["message"]
        ok = httpx.post(
            srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.flac", _flac_silence(2.0))}, timeout=60
        )
        assert ok.status_code == 200, ok.text


def test_load_audio_holds_one_copy():
    """_whole grows one buffer in place: the peak is about one decoded copy."""
    import tracemalloc

    from voxtral.audio import load_audio

    data = _wav(60.0, noise=False)
    tracemalloc.start()
    x = load_audio(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape[0] == 60 * 16000
    assert peak < 1.4 * x.nbytes, (peak, x.nbytes)  # pieces then np.concatenate: 2.0


# ---- 2: work of a client that left is cancelled; uploads count as sessions; bounded shutdown ----
def test_upload_cancelled_when_client_disconnects(model):
    body = _wav(400.0)
    with limited_server(model, max_audio_seconds=3600.0) as srv:
        manager = srv.app.state.manager
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                srv.base_url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", body)},
                timeout=httpx.Timeout(60, read=1.5),
            )
        # the transcription of 400 s would take much longer: the session must go when the client does
        deadline = time.monotonic() + 5
        while manager.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not manager.sessions, "the session outlived its client"


def test_upload_being_received_counts_against_max_sessions(model):
    with limited_server(model, max_sessions=1) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
        )
        time.sleep(0.5)  # the first upload is being received
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.wav", _wav(1.0))}, timeout=30)
        assert r.status_code == 429, r.text


def test_shutdown_ends_sessions_with_an_error_within_the_grace(model):
    from voxtral.server.transport import HttpLimits

    with limited_server(model, http=HttpLimits(shutdown_grace_seconds=1.0)) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(pcm16(np.zeros(8000))))
        t0 = time.monotonic()
        srv.should_exit = True
        event, _ = until(ws, "error", timeout=10)
        assert event["code"] == "shutting_down"
        srv.thread.join(timeout=10)
        assert not srv.thread.is_alive() and time.monotonic() - t0 < 8


# ---- 3 (upload side): decoding in a pool of its own ----
def test_uploads_decode_in_their_own_pool(model, monkeypatch):
    import voxtral.audio

    seen = []
    real = voxtral.audio.load_audio

    def spy(*a, **kw):
        seen.append(threading.current_thread().name)
        return real(*a, **kw)

    monkeypatch.setattr(voxtral.audio, "load_audio", spy)
    with limited_server(model) as srv:
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.wav", _wav(1.0))}, timeout=60)
        assert r.status_code == 200, r.text
    assert seen and all(name.startswith("voxtral-decode") for name in seen), seen


# ---- 4: pending output bounded in bytes; client strings not echoed unbounded ----
def test_error_does_not_echo_a_long_model_name(model):
    with limited_server(model) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "model": "m" * 100_000}))
        event = recv_json(ws)
        assert event["code"] == "model_not_found" and len(event["error"]) < 300


def test_pending_output_bounded_in_bytes(model):
    """Every put counts the event's bytes; past the bound the session is cut
    off with one slow_consumer error (the count bound alone let 500 MB pile up)."""
    from voxtral.server import protocol
    from voxtral.server.metrics import Metrics
    from voxtral.server.sessions import CLOSE, SessionManager, Settings

    manager = SessionManager(model, Settings(max_pending_bytes=64 << 10), Metrics())
    s = manager.open("ws")
    for _ in range(200):  # 200 x ~1 KB: over 64 KB long before the 4096-event bound
        s.put(protocol.error("x" * 1000, protocol.INVALID_EVENT))
    assert s.closed and s.killed.is_set() and not manager.sessions
    left = [s.outbox.get_nowait() for _ in range(s.outbox.qsize())]
    assert left[0]["code"] == protocol.SLOW_CONSUMER and left[-1] is CLOSE and len(left) == 2


# ---- 5: upload bytes refused on Content-Length and while received ----
def test_upload_refused_on_content_length(model):
    with limited_server(model, max_upload_bytes=1 << 20) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 300000000\r\n\r\n"
        )
        s.settimeout(5)
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head


def test_chunked_upload_stopped_at_the_limit(model):
    limit = 1 << 20
    with limited_server(model, max_upload_bytes=limit) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"\0" * 65536
        sent, answer = 0, b""
        s.settimeout(0.05)
        try:
            while sent < 40 * limit and not answer:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                try:
                    answer = s.recv(4096)
                except TimeoutError:
                    pass
        except OSError:
            pass  # the server closed the connection
        s.settimeout(5)
        if not answer:
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert sent < 8 * limit, sent


# ---- 6: audio appended after a final commit counts against --max-backlog ----
def test_backlog_counts_audio_after_final_commit(model):
    with limited_server(model, max_backlog_seconds=5.0) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(pcm16(np.zeros(16000))))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        for _ in range(20):  # 20 s against a 5 s limit
            ws.send(append(pcm16(np.zeros(16000))))
        codes = []
        deadline = time.monotonic() + 30
        while "server_overloaded" not in codes and time.monotonic() < deadline:
            event = recv_json(ws, timeout=30)
            codes.append(event.get("code"))
        assert "server_overloaded" in codes


# ---- 7: no permessage-deflate ----
def test_no_websocket_compression(model):
    with limited_server(model) as srv, _connect(srv, compression="deflate") as ws:
        assert recv_json(ws)["type"] == "session.created"
        assert ws.protocol.extensions == []


# ---- 8: header deadline, body rate, idle connections, connection cap ----
def test_slow_and_idle_connections_are_closed(model):
    from voxtral.server.transport import HttpLimits

    with limited_server(model, http=HttpLimits(header_timeout_seconds=1.0)) as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port))
        partial = socket.create_connection(("127.0.0.1", srv.port))
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        handshake = socket.create_connection(("127.0.0.1", srv.port))
        handshake.sendall(b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        slow_body = socket.create_connection(("127.0.0.1", srv.port))
        slow_body.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        trickle = socket.create_connection(("127.0.0.1", srv.port))
        t0 = time.monotonic()
        for i in range(8):  # one header line every 0.4 s
            try:
                trickle.sendall(b"X-%d: y\r\n" % i if i else b"GET /health HTTP/1.1\r\n")
                slow_body.sendall(b"-")
            except OSError:
                break
            time.sleep(0.4)
        for s in (idle, partial, handshake, slow_body, trickle):
            assert _closed_within(s, 4.0), s
            s.close()
        assert time.monotonic() - t0 < 12
        assert httpx.get(srv.base_url + "/health", timeout=10).status_code == 200


def test_websocket_session_outlives_the_header_deadline(model):
    """The header deadline is for HTTP requests: a realtime session that lasts
    longer (every live one does) stays open and keeps being answered."""
    from voxtral.server.transport import HttpLimits

    with limited_server(model, http=HttpLimits(header_timeout_seconds=0.5)) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        time.sleep(1.5)  # three deadlines
        ws.send(json.dumps({"type": "session.update", "model": "no-such-model"}))  # answered with an error event
        assert recv_json(ws, timeout=10).get("code") == "model_not_found"


def test_connection_cap(model):
    from voxtral.server.transport import HttpLimits

    with limited_server(model, http=HttpLimits(max_connections=4)) as srv:
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(10)]
        time.sleep(0.5)
        closed = sum(_closed_within(s, 0.5) for s in socks)
        assert closed >= 6, closed
        for s in socks:
            s.close()
        time.sleep(0.3)
        assert httpx.get(srv.base_url + "/health", timeout=10).status_code == 200


# ---- 9: every bad message gets an error event; the session goes on ----
def test_huge_integer_and_lone_surrogate_get_error_events(model):
    with limited_server(model) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send('{"type": "session.update", "transcription_delay_ms": ' + "9" * 5000 + "}")
        assert recv_json(ws)["code"] == "invalid_json"
        ws.send('{"type": "\\ud800"}')
        assert recv_json(ws)["code"] == "unknown_event"
        ws.send('{"type": "session.update", "model": "\\udc00"}')
        assert recv_json(ws)["code"] == "model_not_found"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(pcm16(np.zeros(8000))))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        until(ws, "transcription.done")


def test_internal_error_in_a_message_is_answered_and_logged(model, monkeypatch, caplog):
    from voxtral.server import sessions

    def boom(self, s, samples, **kw):
        raise RuntimeError("injected")

    monkeypatch.setattr(sessions.SessionManager, "append", boom)
    with limited_server(model) as srv, _connect(srv) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send(append(pcm16(np.zeros(800))))
        assert recv_json(ws)["code"] == "internal_error"
        ws.send(json.dumps({"type": "session.update", "model": "nope"}))
        assert recv_json(ws)["code"] == "model_not_found"  # the session went on
        metrics = httpx.get(srv.base_url + "/metrics", timeout=10).text
    assert 'code="internal_error"' in metrics
    assert any("message failed" in r.getMessage() for r in caplog.records)


# ---- 11: origins, keys, integer and temperature fields ----
def test_cross_origin_refused_unless_allowed(model):
    from websockets.exceptions import InvalidStatus

    files = {"file": ("a.wav", _wav(0.5))}
    with limited_server(model) as srv:
        r = httpx.post(
            srv.base_url + "/v1/audio/transcriptions",
            files=files,
            headers={"Origin": "https://evil.example"},
            timeout=30,
        )
        assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden_origin"
        with pytest.raises(InvalidStatus):
            with _connect(srv, origin="https://evil.example"):
                pass
        same = httpx.get(srv.base_url + "/health", headers={"Origin": srv.base_url}, timeout=10)
        assert same.status_code == 200
    with limited_server(model, allow_origins=("https://app.example",)) as srv:
        r = httpx.post(
            srv.base_url + "/v1/audio/transcriptions",
            files=files,
            headers={"Origin": "https://app.example"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        with _connect(srv, origin="https://app.example") as ws:
            assert recv_json(ws)["type"] == "session.created"


def test_bearer_scheme_case_insensitive(model):
    with limited_server(model, api_key="k3y") as srv:
        assert httpx.get(srv.base_url + "/v1/models", headers={"Authorization": "bearer k3y"}).status_code == 200
        assert httpx.get(srv.base_url + "/v1/models", headers={"Authorization": "BEARER k3y"}).status_code == 200
        assert httpx.get(srv.base_url + "/v1/models", headers={"Authorization": "Basic k3y"}).status_code == 401


@pytest.mark.parametrize("value", ["4_8_0", " 480 ", "\u0664\u0668\u0660", "480.0"])
def test_delay_field_accepts_integers_only(model, value):
    with limited_server(model) as srv:
        r = httpx.post(
            srv.base_url + "/v1/audio/transcriptions",
            files={"file": ("a.wav", _wav(0.5))},
            data={"transcription_delay_ms": value},
            timeout=30,
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "transcription_delay_ms", r.text


def test_temperature_validated(model):
    with limited_server(model) as srv:
        url = srv.base_url + "/v1/audio/transcriptions"
        r = httpx.post(url, files={"file": ("a.wav", _wav(0.5))}, data={"temperature": "0.7"}, timeout=30)
        assert r.status_code == 400 and "temperature must be 0" in r.json()["error"]["message"]
        r = httpx.post(url, files={"file": ("a.wav", _wav(0.5))}, data={"temperature": "0"}, timeout=30)
        assert r.status_code == 200, r.text


def test_api_key_sources(tmp_path, monkeypatch):
    from voxtral.errors import UsageError
    from voxtral.server.main import api_key_from, build_parser

    monkeypatch.delenv("VOXTRAL_API_KEY", raising=False)
    with pytest.raises(UsageError, match="empty"):
        api_key_from(build_parser().parse_args(["--api-key", ""]))
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    assert api_key_from(build_parser().parse_args(["--api-key-file", str(key_file)])) == "s3cret"
    monkeypatch.setenv("VOXTRAL_API_KEY", "envkey")
    assert api_key_from(build_parser().parse_args([])) == "envkey"
    monkeypatch.setenv("VOXTRAL_API_KEY", " ")
    with pytest.raises(UsageError, match="empty"):
        api_key_from(build_parser().parse_args([]))
    help_text = " ".join(build_parser().format_help().split())
    assert "process list" in help_text
    for flag in (
        "--max-audio-seconds",
        "--max-upload-bytes",
        "--max-pending-bytes",
        "--header-timeout",
        "--max-connections",
        "--shutdown-grace",
        "--allow-origin",
        "--decode-threads",
    ):
        assert flag in help_text


# ---- 13: port errors before the model loads, their own exit code ----
def _serve(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "voxtral", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "VOXTRAL_MODEL_DIR": "/nonexistent"},
    )


def test_serve_port_errors():
    r = _serve("--port", "99999")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--port" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = _serve("--port", str(taken.getsockname()[1]))
    from voxtral.errors import BindError

    assert r.returncode == BindError.exit_code and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_serve_warns_without_key_off_loopback():
    r = _serve("--host", "0.0.0.0", "--port", str(free_port()))  # then fails: no model at /nonexistent
    assert "without an API key" in r.stderr


# ---- 14: m4a uploads (ffmpeg from a temporary file), formats named in the 400 ----
def test_bad_upload_names_accepted_formats(model):
    with limited_server(model) as srv:
        r = httpx.post(
            srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.bin", b"\x01\x02" * 500)}, timeout=30
        )
        assert r.status_code == 400 and "FLAC" in r.json()["error"]["message"], r.text


@pytest.mark.skipif(__import__("shutil").which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_m4a_upload_and_stdin(model, tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(_wav(10.0))  # long enough that ffmpeg cannot find its index from a pipe
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    from voxtral.audio import load_audio, read_audio_stream

    by_path = load_audio(m4a)
    with open(m4a, "rb") as f:
        piped = np.concatenate(list(read_audio_stream(_Unseekable(f))))
    np.testing.assert_array_equal(piped, by_path)
    with limited_server(model) as srv:
        r = httpx.post(
            srv.base_url + "/v1/audio/transcriptions", files={"file": ("a.m4a", m4a.read_bytes())}, timeout=60
        )
        assert r.status_code == 200, r.text


class _Unseekable(io.RawIOBase):
    def __init__(self, f):
        self._f = f

    def readable(self):
        return True

    def readinto(self, b):
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


# ---- 15: OpenAI error shape everywhere; every served name listed ----
def test_error_shape_and_models(model):
    with limited_server(model, names=("a-model", "b-model")) as srv:
        for r, status in (
            (httpx.get(srv.base_url + "/nope"), 404),
            (httpx.get(srv.base_url + "/v1/audio/transcriptions"), 405),
        ):
            assert r.status_code == status
            body = r.json()
            assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
        names = [m["id"] for m in httpx.get(srv.base_url + "/v1/models").json()["data"]]
        assert names == ["a-model", "b-model"]
