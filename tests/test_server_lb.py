"""Beyond one machine: two servers behind HAProxy (Debian's package), with
the configuration documented in deploy/haproxy.cfg. Sessions spread over
both, each transcript is right, and when one server dies new sessions go to
the other. Skipped when haproxy is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")

import voxtral  # noqa: E402
from server_util import free_port, pcm16, running_server, transcribe_ws  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _reference(model, pcm: bytes) -> str:
    s = model.stream()
    return "".join(e.text for e in s.feed(np.frombuffer(pcm, "<i2").astype(np.int16)) + s.finish())


def test_two_servers_behind_haproxy(model):
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    rng = np.random.default_rng(5)
    clips = [pcm16((0.1 * rng.standard_normal(16000 + 4000 * i)).astype(np.float32)) for i in range(6)]
    with running_server(model) as one, running_server(model) as two:
        lb_port = free_port()
        env = dict(
            os.environ,
            VOXTRAL_LB_BIND=f"127.0.0.1:{lb_port}",
            VOXTRAL_BACKEND1=f"127.0.0.1:{one.port}",
            VOXTRAL_BACKEND2=f"127.0.0.1:{two.port}",
        )
        subprocess.run([haproxy, "-c", "-f", str(CONFIG)], env=env, check=True, capture_output=True)
        proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_port(lb_port)
            time.sleep(1.0)  # first health checks
            url = f"ws://127.0.0.1:{lb_port}/v1/realtime"
            results = [None] * len(clips)

            def run(i):
                results[i] = transcribe_ws(url, clips[i], chunk_bytes=2560, pace=0.005)[0]["text"]

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert results == [_reference(model, c) for c in clips]
            served = [srv.app.state.manager.metrics.sessions_total for srv in (one, two)]
            assert sum(served) == len(clips) and min(served) >= 1, served  # both took sessions
            # the OpenAI endpoint goes through too
            r = httpx.post(
                f"http://127.0.0.1:{lb_port}/v1/audio/transcriptions",
                files={"file": ("a.wav", _wav(clips[0]))},
                data={"response_format": "text"},
            )
            assert r.status_code == 200 and r.text == _reference(model, clips[0])

            # one server goes away: new sessions still get served
            two.should_exit = True
            deadline = time.monotonic() + 20
            while two.started and time.monotonic() < deadline and not _down(two.port):
                time.sleep(0.1)
            time.sleep(1.5)  # fall 2 x inter 500ms
            before = one.app.state.manager.metrics.sessions_total
            for clip in clips[:3]:
                assert transcribe_ws(url, clip)[0]["text"] == _reference(model, clip)
            assert one.app.state.manager.metrics.sessions_total == before + 3
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _down(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wav(pcm: bytes) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return buf.getvalue()
