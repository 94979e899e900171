"""Probe the server's resource limits (issue 15): start ``python -m voxtral serve``
on 127.0.0.1 with a given model, send each attack a bounded number of times,
and print one JSON line per probe with the server's RSS, open fds and seconds.

    python bench/probe_server_limits.py --model DIR [--python PY] [--env K=V ...] [--only a,b]

Run the same probe against two builds (e.g. ``--env PYTHONPATH=OLD/src``) to
compare them. Only loopback servers this script starts are probed; every
probe is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Server:
    def __init__(self, python: str, model: str, env: dict, extra: list[str]):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/v1/realtime"
        self.proc = subprocess.Popen(
            [
                python,
                "-m",
                "voxtral",
                "serve",
                "--model",
                model,
                "--port",
                str(self.port),
                "--log-level",
                "critical",
                *extra,
            ],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stats(self) -> dict:
        return {"rss_mb": round(_rss_mb(self.proc.pid), 1), "fds": _fds(self.proc.pid)}

    def stop(self, wait: float = 60) -> float:
        """SIGTERM; seconds until the process exits (killed after ``wait``)."""
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0


def _audio(seconds: float, fmt: str, noise: bool = False) -> bytes:
    import soundfile

    x = np.zeros(int(seconds * 16000), dtype="f4")
    if noise:
        x = (np.random.default_rng(0).standard_normal(x.shape[0]) * 0.1).astype("f4")
    buf = io.BytesIO()
    soundfile.write(buf, x, 16000, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _active(srv) -> float:
    import httpx

    for line in httpx.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("voxtral_sessions_active"):
            return float(line.split()[-1])
    return -1


def _post_in_background(srv, files, timeout):
    import httpx

    answer = {}

    def post():
        try:
            answer["status"] = httpx.post(
                srv.url + "/v1/audio/transcriptions", files=files, timeout=timeout
            ).status_code
        except httpx.HTTPError as exc:
            answer["status"] = type(exc).__name__

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answer


def probe_flac_hour(srv) -> dict:
    """Item 1: peak RSS within 30 s of uploading a small FLAC of one hour of silence."""
    flac = _audio(3600, "FLAC")
    thread, answer = _post_in_background(srv, {"file": ("a.flac", flac)}, 30)
    peak, t0 = 0.0, time.monotonic()
    while thread.is_alive() and time.monotonic() - t0 < 30:
        peak = max(peak, _rss_mb(srv.proc.pid))
        time.sleep(0.05)
    return {
        "upload_kb": len(flac) // 1024,
        "status": answer.get("status", "no answer in 30 s"),
        "peak_rss_mb": round(peak, 1),
    }


def probe_flac_3h(srv) -> dict:
    """Item 1: the same for three hours (546 KB), over the default one-hour --max-audio-seconds."""
    flac = _audio(3 * 3600, "FLAC")
    thread, answer = _post_in_background(srv, {"file": ("a.flac", flac)}, 30)
    peak, t0 = 0.0, time.monotonic()
    while thread.is_alive() and time.monotonic() - t0 < 30:
        peak = max(peak, _rss_mb(srv.proc.pid))
        time.sleep(0.05)
    return {
        "upload_kb": len(flac) // 1024,
        "status": answer.get("status", "no answer in 30 s"),
        "seconds": round(time.monotonic() - t0, 2),
        "peak_rss_mb": round(peak, 1),
    }


def probe_cut_uploads(srv) -> dict:
    """Item 2: four 300 s uploads cut by their clients after 0.3 s; seconds until no session is active."""
    import httpx

    body = _audio(300, "WAV", noise=True)
    for _ in range(4):
        try:
            httpx.post(
                srv.url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", body)},
                timeout=httpx.Timeout(30, read=0.3),
            )
        except httpx.ReadTimeout:
            pass
    t0 = time.monotonic()
    while _active(srv) > 0 and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    return {"seconds_until_sessions_gone": round(time.monotonic() - t0, 2), "capped_at": 60, **srv.stats()}


def probe_sigterm(srv) -> dict:
    """Item 2: SIGTERM while two 300 s uploads are transcribed; seconds until the process exits (cap 60)."""
    body = _audio(300, "WAV", noise=True)
    for _ in range(2):
        _post_in_background(srv, {"file": ("a.wav", body)}, 300)
    time.sleep(2.0)
    return {"seconds_to_exit_after_sigterm": round(srv.stop(wait=60), 2), "capped_at": 60}


def probe_long_model_name(srv) -> dict:
    """Item 4: a client that never reads sends 0.5 MB model names for up to 30 s; server RSS."""
    from websockets.sync.client import connect

    peak = 0.0
    with connect(srv.ws, max_size=None, max_queue=1) as ws:
        msg = json.dumps({"type": "session.update", "model": "m" * 500_000})
        t0, sent = time.monotonic(), 0
        try:
            for _ in range(400):
                ws.send(msg)
                sent += 1
                peak = max(peak, _rss_mb(srv.proc.pid))
                if time.monotonic() - t0 > 30:
                    break
        except Exception:  # noqa: BLE001  any send failure ends the flood: the probe measures how far it got
            pass
        time.sleep(1)
        peak = max(peak, _rss_mb(srv.proc.pid))
    return {"messages_sent": sent, "peak_rss_mb": round(peak, 1)}


def probe_content_length(srv) -> dict:
    """Item 5: headers announcing 300 MB, no body; the answer and its delay."""
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 300000000\r\n\r\n"
        )
        s.settimeout(10)
        t0 = time.monotonic()
        try:
            head = s.recv(64)
        except OSError:
            head = b"(no answer in 10 s)"
        return {"answer": head.split(b"\r\n")[0].decode(errors="replace"), "seconds": round(time.monotonic() - t0, 2)}


def probe_chunked_upload(srv) -> dict:
    """Item 5: a chunked upload of up to 300 MB; MB sent before the server answered or closed."""
    limit = 300 << 20
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"\0" * (1 << 20)
        sent, answer = 0, b""
        s.settimeout(20)
        t0 = time.monotonic()
        try:
            while sent < limit and time.monotonic() - t0 < 60:
                if select.select([s], [], [], 0)[0]:
                    answer = s.recv(64) or b"(closed)"
                    break
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError as exc:
            answer = f"({type(exc).__name__})".encode()
        if not answer:
            try:
                answer = s.recv(64) or b"(closed)"
            except OSError as exc:
                answer = f"({type(exc).__name__})".encode()
    return {"mb_sent": sent >> 20, "answer": answer.split(b"\r\n")[0].decode(errors="replace"), **srv.stats()}


def probe_held_backlog(srv) -> dict:
    """Item 6: 300 s appended after a final commit, against the default 120 s --max-backlog."""
    from websockets.sync.client import connect

    with connect(srv.ws, max_size=None) as ws:
        ws.recv(timeout=10)
        chunk = json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(np.zeros(16000 * 10, "<i2").tobytes()).decode(),
            }
        )
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(chunk)
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        for _ in range(30):
            ws.send(chunk)
        refused = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                event = json.loads(ws.recv(timeout=2))
            except TimeoutError:
                break
            refused += event.get("code") == "server_overloaded"
    return {"chunks_of_10s_refused": refused, "of": 30}


def probe_deflate(srv) -> dict:
    """Item 7: is permessage-deflate negotiated? And RSS after 200 compressed 1 MB appends (not read)."""
    from websockets.sync.client import connect

    audio = base64.b64encode(bytes(700_000)).decode()  # ~0.93 MB of text, ~1 KB compressed
    msg = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    peak = 0.0
    with connect(srv.ws, compression="deflate", max_size=None) as ws:
        extensions = [type(e).__name__ for e in ws.protocol.extensions]
        t0 = time.monotonic()
        for _ in range(200):
            try:
                ws.send(msg)
            except Exception:  # noqa: BLE001  any send failure ends the flood: the probe measures how far it got
                break
            peak = max(peak, _rss_mb(srv.proc.pid))
            if time.monotonic() - t0 > 30:
                break
        time.sleep(1)
        peak = max(peak, _rss_mb(srv.proc.pid))
    return {"extensions": extensions, "peak_rss_mb": round(peak, 1)}


def probe_idle_connections(srv) -> dict:
    """Item 8: 300 idle connections and 5 slowloris ones; how many are still open after 20 s, server fds."""
    socks = []
    for _ in range(300):
        try:
            socks.append(socket.create_connection(("127.0.0.1", srv.port)))
        except OSError:
            break
    slow = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(5)]
    for s in slow:
        s.sendall(b"GET /health HTTP/1.1\r\n")
    fds_during = _fds(srv.proc.pid)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        for i, s in enumerate(slow):
            try:
                s.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                pass
        time.sleep(2)

    def still_open(s) -> bool:
        s.setblocking(False)
        try:
            return s.recv(1) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    result = {
        "idle_opened": len(socks),
        "idle_open_after_20s": sum(map(still_open, socks)),
        "slowloris_open_after_20s": sum(map(still_open, slow)),
        "fds_with_all_open": fds_during,
        **srv.stats(),
    }
    for s in socks + slow:
        s.close()
    return result


def probe_huge_integer(srv) -> dict:
    """Item 9: a 5000-digit integer; the answer (an error event, or the close)."""
    from websockets.sync.client import connect

    with connect(srv.ws) as ws:
        ws.recv(timeout=10)
        ws.send('{"type": "session.update", "transcription_delay_ms": ' + "9" * 5000 + "}")
        try:
            return {"answer": json.loads(ws.recv(timeout=5)).get("code")}
        except Exception as exc:  # noqa: BLE001  whatever ended the connection is the answer reported
            return {"answer": f"closed: {type(exc).__name__} {getattr(exc, 'rcvd', '')}"}


def probe_404(srv) -> dict:
    """Item 15: the body of a 404."""
    import httpx

    return {
        "body": httpx.get(srv.url + "/nope").json(),
        "models": [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]],
    }


PROBES = [
    probe_flac_hour,
    probe_flac_3h,
    probe_cut_uploads,
    probe_sigterm,
    probe_long_model_name,
    probe_content_length,
    probe_chunked_upload,
    probe_held_backlog,
    probe_deflate,
    probe_idle_connections,
    probe_huge_integer,
    probe_404,
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--env", action="append", default=[], help="K=V for the server process")
    p.add_argument("--only", default=None, help="comma-separated probe names")
    args = p.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    only = set(args.only.split(",")) if args.only else None
    for probe in PROBES:
        name = probe.__name__[len("probe_") :]
        if only and name not in only:
            continue
        srv = Server(args.python, args.model, env, [])
        base = srv.stats()
        try:
            result = probe(srv)
        except Exception as exc:  # noqa: BLE001  a probe that fails for any reason is reported, the rest still run
            result = {"failed": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            if srv.proc.poll() is None:
                srv.stop(wait=5)
        print(json.dumps({"probe": name, "baseline": base, **result}), flush=True)


if __name__ == "__main__":
    main()
