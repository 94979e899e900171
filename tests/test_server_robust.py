"""Robustness of the server: a fuzz test of the WebSocket messages, a slow
reader that must not stall the others, and sessions opened and cut (a short
run here; the long soak is marked slow)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")
import voxtral  # noqa: E402
from server_util import append, pcm16, recv_json, running_server, transcribe_ws, until  # noqa: E402

SENTINEL = json.dumps({"type": "fuzz.sentinel"})
SERVER_EVENTS = {"error", "transcription.delta", "transcription.done", "transcription.lag"}


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    [
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "session.created",
        "transcription.done",
        "",
        "INPUT_AUDIO_BUFFER.APPEND",
    ]
)
audio_fields = st.one_of(
    st.binary(max_size=600).map(_b64),  # odd and even byte counts, empty
    st.text(max_size=40),  # mostly not base64
    json_values,
)
structured = st.fixed_dictionaries(
    {"type": event_types},
    optional={
        "audio": audio_fields,
        "final": json_values,
        "model": json_values,
        "transcription_delay_ms": st.one_of(st.integers(-(10**6), 10**6), json_values),
    },
).map(json.dumps)
messages = st.one_of(
    structured,
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


def test_fuzz_realtime_messages(model):
    """Whatever arrives, the server answers with well-formed events (or
    nothing), keeps the session alive, and still transcribes afterwards."""
    from websockets.sync.client import connect

    with (
        running_server(model, names=("voxtral-test",), max_backlog_seconds=5.0) as srv,
        connect(srv.ws_url, max_size=None) as ws,
    ):
        assert recv_json(ws)["type"] == "session.created"

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(messages, min_size=1, max_size=4))
        def run(batch):
            for message in batch:
                ws.send(message)
            ws.send(SENTINEL)  # answered by an unknown_event error after everything before it
            while True:
                event = recv_json(ws, timeout=60)
                assert isinstance(event, dict) and event.get("type") in SERVER_EVENTS, event
                if event["type"] == "error":
                    assert isinstance(event["error"], str) and isinstance(event["code"], str)
                    if "fuzz.sentinel" in event["error"]:
                        break

        run()
        manager = srv.app.state.manager
        assert len(manager.sessions) == 1
        # the session works for a real utterance after all that
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        until(ws, "transcription.done")  # the fuzz utterance, if one was open
        audio = pcm16(0.1 * np.sin(np.arange(16000) / 7.0).astype(np.float32))
        ws.send(json.dumps({"type": "session.update", "transcription_delay_ms": 480}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(audio))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        done, _ = until(ws, "transcription.done")
        s = model.stream(480)
        ref = "".join(e.text for e in s.feed(np.frombuffer(audio, "<i2").astype(np.int16)) + s.finish())
        assert done["text"] == ref


def test_slow_reader_does_not_stall_others_and_is_cut_off(model):
    """A session whose events are never read only grows its own outbox; the
    scheduler keeps serving the others and cuts it off past the limit."""
    from voxtral.server.metrics import Metrics
    from voxtral.server.sessions import SessionManager, Settings

    async def scenario():
        mgr = SessionManager(model, Settings(max_pending_events=40), Metrics())
        mgr.start()
        slow, fast = mgr.open("ws"), mgr.open("ws")
        rng = np.random.default_rng(3)
        audio = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
        for s in (slow, fast):
            mgr.commit(s, final=False)
        for start in range(0, audio.shape[0], 1280):
            mgr.append(fast, audio[start : start + 1280])
            mgr.append(slow, audio[start : start + 1280])
        mgr.commit(fast, final=True)
        mgr.commit(slow, final=True)
        text = []
        while True:  # only the fast session is read
            event = await asyncio.wait_for(fast.outbox.get(), 120)
            if event["type"] == "transcription.delta":
                text.append(event["delta"])
            if event["type"] == "transcription.done":
                break
        await asyncio.wait_for(slow.killed.wait(), 60)
        await mgr.stop()
        leftovers = []
        while not slow.outbox.empty():
            leftovers.append(slow.outbox.get_nowait())
        return "".join(text), event, leftovers, mgr

    text, done, leftovers, mgr = asyncio.run(scenario())
    assert text == done["text"]
    assert leftovers[0]["type"] == "error" and leftovers[0]["code"] == "slow_consumer"
    assert mgr.metrics.errors["slow_consumer"] == 1
    assert len(mgr.sessions) == 1  # the slow one is gone


def test_lag_event_when_server_falls_behind(model):
    """Audio at real-time pace that the server cannot decode in time: a
    transcription.lag event and the metric, not silence."""
    from voxtral.server.metrics import Metrics
    from voxtral.server.sessions import SessionManager, Settings

    async def scenario():
        mgr = SessionManager(model, Settings(lag_warn_seconds=0.2), Metrics())
        # hold the scheduler: the engine 'cannot keep up' while audio keeps arriving at pace
        s = mgr.open("ws")
        mgr.commit(s, final=False)
        for _ in range(8):
            mgr.append(s, np.zeros(1280, dtype=np.float32))
            await asyncio.sleep(0.08)
        mgr._dispatch({}, 0.0, 0, 0)
        events = []
        while not s.outbox.empty():
            events.append(s.outbox.get_nowait())
        return events, mgr

    events, mgr = asyncio.run(scenario())
    assert events and events[0]["type"] == "transcription.lag" and events[0]["backlog_seconds"] >= 0.6
    assert mgr.metrics.lag_events == 1


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _churn(srv, n_sessions: int, seconds: float):
    """Many sessions in parallel waves: some complete, some are cut mid-stream."""
    from websockets.sync.client import connect

    rng = np.random.default_rng(11)
    audio = pcm16((0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32))

    failures = []

    def one(i):
        try:
            _one(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            failures.append(repr(exc))

    def _one(i):
        if i % 3 == 0:
            transcribe_ws(srv.ws_url, audio, chunk_bytes=5120)
            return
        with connect(srv.ws_url) as ws:
            recv_json(ws)
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            for start in range(0, len(audio) // (2 if i % 3 == 1 else 4), 5120):
                ws.send(append(audio[start : start + 5120]))
            if i % 3 == 1:
                ws.close()  # cut mid-stream, politely
            else:
                ws.socket.close()  # cut mid-stream: the TCP connection just drops

    for wave in range(0, n_sessions, 4):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(wave, min(wave + 4, n_sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not failures, failures


def _settled(srv, timeout=30.0) -> bool:
    mgr = srv.app.state.manager
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not mgr.sessions and not mgr.streams and mgr.metrics.sessions_active == 0:
            return True
        time.sleep(0.05)
    return False


def _soak(model, n_sessions: int, seconds: float, rounds: int):
    with running_server(model, max_sessions=8) as srv:
        _churn(srv, 4, seconds)  # warm-up: allocator pools, imports
        assert _settled(srv)
        gc.collect()
        baseline = _rss_mb()
        for _ in range(rounds):
            _churn(srv, n_sessions, seconds)
            assert _settled(srv), "sessions leaked"
        gc.collect()
        grown = _rss_mb() - baseline
        metrics = httpx.get(srv.base_url + "/metrics").text
        assert "\nvoxtral_sessions_active 0\n" in "\n" + metrics
        return grown


def test_churn_leaves_no_sessions(model):
    grown = _soak(model, n_sessions=9, seconds=1.5, rounds=1)
    assert grown < 100  # MB; the long soak below bounds it tighter


@pytest.mark.slow
def test_soak_memory_back_to_baseline(model):
    """Hundreds of sessions over several rounds: no leaked session, and the
    memory after the rounds is within a small margin of the baseline."""
    grown = _soak(model, n_sessions=60, seconds=3.0, rounds=4)
    assert grown < 25, f"RSS grew by {grown:.1f} MB"


def test_idle_sessions_cost_no_steps(model):
    """A session that started an utterance and then sends nothing: once its
    audio is decoded the scheduler sleeps instead of spinning."""
    from websockets.sync.client import connect

    with running_server(model) as srv, connect(srv.ws_url) as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(pcm16(np.zeros(8000, dtype=np.float32))))
        mgr = srv.app.state.manager
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the decoder has caught up with the audio
            stream = next(iter(mgr.sessions.values())).stream
            if stream is not None and not stream.waiting_audio and stream.next_step() is None:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        before = mgr.iterations
        time.sleep(0.5)
        assert mgr.iterations == before


def _manager_run(model, settings, body):
    from voxtral.server.metrics import Metrics
    from voxtral.server.sessions import SessionManager

    async def scenario():
        mgr = SessionManager(model, settings, Metrics())
        mgr.start()
        try:
            return await asyncio.wait_for(body(mgr), timeout=120)
        finally:
            await mgr.stop()

    return asyncio.run(scenario())


async def _until_done(s, seen: list | None = None) -> dict:
    while True:
        event = await s.outbox.get()
        if seen is not None:
            seen.append(event)
        if isinstance(event, dict) and event["type"] in ("transcription.done", "error"):
            return event


def test_one_failing_session_leaves_the_others(model, audio_dir):
    """A fault injected into one session's step: that session gets an error
    event, the others in the same engine steps get their exact transcripts."""
    from voxtral.audio import load_audio
    from voxtral.server.sessions import Settings

    clip = load_audio(audio_dir / "jfk.wav")[: 3 * 16000]

    async def body(mgr):
        sessions = [mgr.open("http") for _ in range(3)]
        for s in sessions:
            mgr.append(s, clip, limit_backlog=False)
            mgr.commit(s, final=True)
        bad = sessions[1]
        while bad.stream is None:
            await asyncio.sleep(0.001)

        def broken():
            raise RuntimeError("injected fault")

        bad.stream.next_step = broken
        return await asyncio.gather(*[_until_done(s) for s in sessions]), mgr.metrics

    (first, failed, third), metrics = _manager_run(model, Settings(), body)
    assert failed["type"] == "error" and "injected fault" in failed["error"]
    expected = model.transcribe(clip, 16000).text
    assert first["type"] == third["type"] == "transcription.done"
    assert first["text"] == third["text"] == expected
    assert metrics.errors["processing_error"] == 1


def test_no_lag_event_from_the_delay_alone(model):
    """Audio at real-time pace on a model that keeps up: the prompt and the
    delay hold positions back at the start, but that is no lag."""
    from voxtral.server.sessions import Settings

    async def body(mgr):
        s = mgr.open("ws")
        mgr.commit(s, final=False)
        for _ in range(40):  # 3.2 s at pace, more than the prompt's 2.56 s + delay
            mgr.append(s, np.zeros(1280, dtype=np.float32))
            await asyncio.sleep(0.08)
        mgr.commit(s, final=True)
        events: list = []
        await _until_done(s, events)
        return events, mgr.metrics

    events, metrics = _manager_run(model, Settings(lag_warn_seconds=0.3), body)
    assert events[-1]["type"] == "transcription.done"
    assert metrics.lag_events == 0 and not [e for e in events if e.get("type") == "transcription.lag"]
