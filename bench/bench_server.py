"""Many live clients on one server: N simultaneous synthetic clients, each
sending 80 ms chunks of speech in real time over /v1/realtime.

Latency of a token = when its transcription.delta arrives minus when the
chunk that completes the audio it needs was due (its place on the real-time
schedule: a live source has that audio then, whether or not the consumer is
ready for it; a consumer that falls behind is charged for it). The server sends one delta
per token; the k-th token of a stream with delay D tokens needs the audio of
chunks 0 .. D + k (the model's own delay is thus not counted: this is what
the server adds). First, without the server, the seconds per live step of
the batch engine for each N (what batching saves). Per N it reports p50/p95/max over all tokens of all
sessions, the transcription.lag events, and whether it stays real time
(p95 <= VOXTRAL_BENCH_RT_P95, default 0.5 s, and no lag event); the largest
such N is the capacity. The single-stream overhead compares N=1 through
the server with the plain stream API fed the same chunks at the same pace.

The server runs as its own process (``python -m voxtral serve``), the
clients in this one.

    python bench/bench_server.py --preset fullwidth --clients 1,2,4 --seconds 8
    python bench/bench_server.py --preset full --clients 1,2,4,8,12,16 --seconds 20

``--preset full`` is the real-size random-weight checkpoint of
bench_model.py ($VOXTRAL_BENCH_DIR, 8.9 GB, generated once); ``fullwidth``
has the real widths and vocabulary with 2+2 layers (1.45 GB). Under pytest
(``pytest bench/bench_server.py``) the preset, client counts and seconds come
from VOXTRAL_BENCH_SERVER_PRESET / _CLIENTS / _SECONDS (default fullwidth,
"1,2", 4 s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK_S = 0.08
RATE = 16000
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def checkpoint_dir(preset: str) -> Path:
    root = Path(os.environ.get("VOXTRAL_BENCH_DIR", Path.home() / ".cache" / "voxtral-bench"))
    from voxtral.testing.checkpoint import make_checkpoint

    if preset == "full":
        target = root / "full"
        if not (target / "consolidated.safetensors").is_file():
            make_checkpoint(target, preset="full", layout="native", seed=0)
        return target
    target = root / "fullwidth-2x2"
    if not (target / "consolidated.safetensors").is_file():
        make_checkpoint(target, preset="fullwidth", layout="native", seed=0, enc_n_layers=2, n_layers=2)
    return target


def speech(seconds: float, offset: int) -> np.ndarray:
    from voxtral.audio import load_audio

    clips = [load_audio(p) for p in sorted((SHARED / "data" / "audio").glob("*.wav"))]
    audio = np.concatenate(clips)
    audio = np.roll(audio, offset * 7919)  # a different stretch of speech per client
    reps = int(np.ceil(seconds * RATE / len(audio)))
    return np.concatenate([audio] * reps)[: int(seconds * RATE)]


def percentiles(values) -> dict:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    a = np.asarray(values)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
        "n": int(a.size),
    }


# ---- clients ----
async def live_client(url: str, audio: np.ndarray, delay_tokens: int, start_at: float) -> dict:
    import websockets

    chunk = int(CHUNK_S * RATE)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    n_chunks = int(np.ceil(len(pcm) / chunk))
    sent_at: list[float] = []
    arrivals: list[float] = []
    lag_events = 0
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))

        async def send():
            for j in range(n_chunks):
                due = start_at + j * CHUNK_S
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                data = base64.b64encode(pcm[j * chunk : (j + 1) * chunk].tobytes()).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": data}))
                sent_at.append(due)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))

        sender = asyncio.create_task(send())
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "transcription.delta":
                arrivals.append(time.perf_counter())
            elif event["type"] == "transcription.lag":
                lag_events += 1
            elif event["type"] == "transcription.done":
                break
            elif event["type"] == "error":
                raise RuntimeError(event)
        await sender
    # token k needs chunks 0 .. delay + k; tokens past the audio (the tail) are not live
    latencies = [
        arrivals[k] - sent_at[delay_tokens + k] for k in range(len(arrivals)) if delay_tokens + k < len(sent_at)
    ]
    return {"latencies": latencies, "lag_events": lag_events}


async def run_clients(url: str, n: int, seconds: float, delay_tokens: int) -> dict:
    start = time.perf_counter() + 0.5
    results = await asyncio.gather(
        *[live_client(url, speech(seconds, i), delay_tokens, start + 0.013 * i) for i in range(n)]
    )
    per_session = [percentiles(r["latencies"]) for r in results]
    return {
        "clients": n,
        **percentiles([x for r in results for x in r["latencies"]]),
        "worst_session_p95": max(s["p95"] for s in per_session),
        "lag_events": sum(r["lag_events"] for r in results),
    }


# ---- plain stream API, same pacing ----
def plain_stream(model_dir: Path, seconds: float, delay_tokens: int, threads: int | None) -> dict:
    import voxtral

    model = voxtral.load(model_dir, num_threads=threads, download=False)
    audio = speech(seconds, 0)
    chunk = int(CHUNK_S * RATE)
    stream = model.stream()
    n_chunks = int(np.ceil(len(audio) / chunk))
    start = time.perf_counter() + 0.2
    # chunk j is due at start + j * CHUNK_S, whether or not feed() is ready for it
    sent_at = [start + j * CHUNK_S for j in range(n_chunks)]
    arrivals: list[float] = []
    fed = 0
    while fed < n_chunks:
        time.sleep(max(0.0, sent_at[fed] - time.perf_counter()))
        # everything due by now, as a live source buffers it while the stream is busy
        due = min(n_chunks, 1 + int((time.perf_counter() - start) / CHUNK_S))
        events = stream.feed(audio[fed * chunk : due * chunk])
        fed = due
        arrivals += [time.perf_counter()] * len(events)
    latencies = [
        arrivals[k] - sent_at[delay_tokens + k] for k in range(len(arrivals)) if delay_tokens + k < len(sent_at)
    ]
    return percentiles(latencies)


# ---- the engine alone: what batching saves ----
def engine_steps(model_dir: Path, clients: list[int], threads: int | None, steps: int = 10) -> dict:
    """Seconds per live step (80 ms of new audio per stream: its encoder pass
    and one decoder token each) for N streams in one engine step, no network."""
    import voxtral

    model = voxtral.load(model_dir, num_threads=threads, download=False)
    chunk = int(CHUNK_S * RATE)
    out = {}
    for n in clients:
        streams = [model.stream() for _ in range(n)]
        audio = [speech(3.0 + steps * CHUNK_S, i) for i in range(n)]
        for s, a in zip(streams, audio, strict=True):
            s.feed(a[: 3 * RATE])  # encoder, prefill, and the tokens of those 3 s
        t = time.perf_counter()
        for j in range(steps):
            for s, a in zip(streams, audio, strict=True):
                s.push(a[3 * RATE + j * chunk : 3 * RATE + (j + 1) * chunk])
            model.engine.step(streams)
        out[n] = (time.perf_counter() - t) / steps
        print(
            f"engine, N={n:3d}: {out[n] * 1000:7.1f} ms per live step "
            f"({out[n] / n * 1000:6.1f} ms per stream; real time needs <= {CHUNK_S * 1000:.0f} ms per step)",
            flush=True,
        )
    return out


# ---- server process ----
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_dir: Path, max_sessions: int, threads: int | None, kv_cache: str = "f32"):
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "voxtral",
            "serve",
            "--model",
            str(model_dir),
            "--no-download",
            "--port",
            str(self.port),
            "--max-sessions",
            str(max_sessions),
            "--log-level",
            "warning",
            "--kv-cache",
            kv_cache,
        ]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd)
        self.url = f"ws://127.0.0.1:{self.port}/v1/realtime"

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def sweep(
    preset: str,
    clients: list[int],
    seconds: float,
    threads: int | None = None,
    rt_p95: float | None = None,
    model: Path | None = None,
    kv_cache: str = "f32",
) -> dict:
    import voxtral
    from voxtral.config import DEFAULT_DELAY_MS

    rt_p95 = float(os.environ.get("VOXTRAL_BENCH_RT_P95", "0.5")) if rt_p95 is None else rt_p95
    model_dir = model or checkpoint_dir(preset)
    cfg = voxtral.load(model_dir, download=False).config
    delay_tokens = cfg.delay_tokens(DEFAULT_DELAY_MS)
    steps = engine_steps(model_dir, clients, threads)
    rows = []
    server = ServerProcess(model_dir, max(clients), threads, kv_cache)
    try:
        server.wait_ready()
        asyncio.run(run_clients(server.url, 1, 1.0, delay_tokens))  # warm-up
        for n in clients:
            row = asyncio.run(run_clients(server.url, n, seconds, delay_tokens))
            row["real_time"] = row["p95"] <= rt_p95 and row["lag_events"] == 0
            rows.append(row)
            print(
                f"N={n:3d}  p50 {row['p50'] * 1000:7.1f} ms  p95 {row['p95'] * 1000:7.1f} ms  "
                f"max {row['max'] * 1000:7.1f} ms  lag events {row['lag_events']}  "
                f"{'real time' if row['real_time'] else 'BEHIND'}",
                flush=True,
            )
        metrics = server.metrics()
    finally:
        server.stop()
    plain = plain_stream(model_dir, seconds, delay_tokens, threads)
    single = next((r for r in rows if r["clients"] == 1), None)
    ok = [r["clients"] for r in rows if r["real_time"]]
    report = {
        "preset": preset,
        "seconds": seconds,
        "rt_p95_bound_s": rt_p95,
        "rows": rows,
        "engine_seconds_per_step": steps,
        "largest_real_time_n": max(ok) if ok else 0,
        "plain_stream": plain,
        "server_overhead_p50_s": (single["p50"] - plain["p50"]) if single else None,
        "server_overhead_p95_s": (single["p95"] - plain["p95"]) if single else None,
        "metrics": {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("voxtral_") and "{" not in line
        },
    }
    print(f"plain stream API, 1 stream: p50 {plain['p50'] * 1000:.1f} ms  p95 {plain['p95'] * 1000:.1f} ms")
    if single:
        print(
            f"server overhead at N=1: p50 {report['server_overhead_p50_s'] * 1000:+.1f} ms, "
            f"p95 {report['server_overhead_p95_s'] * 1000:+.1f} ms"
        )
    print(f"largest N in real time (p95 <= {rt_p95:g} s, no lag event): {report['largest_real_time_n']}")
    return report


def test_server_live_clients():
    """Runs the sweep (see the module docstring); asserts only that every
    client got its transcript with timed tokens, never a speed."""
    preset = os.environ.get("VOXTRAL_BENCH_SERVER_PRESET", "fullwidth")
    clients = [int(x) for x in os.environ.get("VOXTRAL_BENCH_SERVER_CLIENTS", "1,2").split(",")]
    seconds = float(os.environ.get("VOXTRAL_BENCH_SERVER_SECONDS", "4"))
    report = sweep(preset, clients, seconds)
    assert [r["clients"] for r in report["rows"]] == clients
    assert all(r["n"] > 0 for r in report["rows"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("full", "fullwidth"), default="full")
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts")
    p.add_argument("--seconds", type=float, default=20.0, help="audio seconds per client")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rt-p95", type=float, default=None, help="p95 bound for 'real time' (s, default 0.5)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a model directory instead of --preset's (e.g. a quantized one: voxtral quantize)",
    )
    p.add_argument("--kv-cache", default="f32", help="the server's KV cache storage (f32, bf16, int8)")
    args = p.parse_args(argv)
    report = sweep(
        args.preset,
        [int(x) for x in args.clients.split(",")],
        args.seconds,
        args.threads,
        args.rt_p95,
        args.model,
        args.kv_cache,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
