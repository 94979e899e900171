"""The server end to end on the tiny checkpoint: the realtime protocol (our
client and vLLM's example client, unmodified), the OpenAI transcription
endpoint through the official openai client, health/models/metrics, auth and
limits. Reference transcripts come from the plain library API
(``model.transcribe`` / ``model.stream``), not from the server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
websockets = pytest.importorskip("websockets")
httpx = pytest.importorskip("httpx")

import voxtral  # noqa: E402
from server_util import append, pcm16, recv_json, running_server, transcribe_ws, until  # noqa: E402
from voxtral.audio import load_audio  # noqa: E402

NAME = "voxtral-test"
VLLM_CLIENT = Path(__file__).parent / "data" / "vllm_client"


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, names=(NAME,)) as srv:
        yield srv


@pytest.fixture(scope="module")
def clip_path(audio_dir):
    return audio_dir / "night1968_5s_dont_worry_about_him.wav"


def _reference(model, samples, delay_ms=None, kv_cache=None):
    """Text and token count of a single plain stream over the same samples."""
    s = model.stream(delay_ms, kv_cache=kv_cache)
    events = s.feed(samples) + s.finish()
    return "".join(e.text for e in events), len(s.tokens)


def _int16_clip(model, path, seconds=None):
    x = load_audio(str(path), target_rate=model.sample_rate)
    if seconds:
        x = x[: int(seconds * model.sample_rate)]
    pcm = pcm16(x)
    return pcm, np.frombuffer(pcm, dtype="<i2").astype(np.int16)


# ---- basic endpoints ----
def test_health_models_metrics(server):
    assert httpx.get(server.base_url + "/health").status_code == 200
    models = httpx.get(server.base_url + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == NAME
    text = httpx.get(server.base_url + "/metrics").text
    for name in (
        "voxtral_sessions_active",
        "voxtral_audio_seconds_in_total",
        "voxtral_tokens_out_total",
        "voxtral_real_time_factor",
        "voxtral_dropped_audio_seconds_total",
    ):
        assert f"\n{name} " in "\n" + text


# ---- realtime protocol ----
def test_realtime_event_order_and_text(server, model, clip_path):
    pcm, samples = _int16_clip(model, clip_path)
    done, before = transcribe_ws(server.ws_url, pcm, model=NAME)
    ref_text, ref_tokens = _reference(model, samples)
    assert all(e["type"] in ("transcription.delta", "transcription.lag") for e in before)
    deltas = [e["delta"] for e in before if e["type"] == "transcription.delta"]
    assert deltas and "".join(deltas) == done["text"]
    assert len(deltas) == ref_tokens  # one delta per token (empty for control tokens), as vLLM
    assert done["text"] == ref_text
    usage = done["usage"]
    assert usage["completion_tokens"] == ref_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def _steps_per_pass(srv) -> float:
    """The server's /metrics figure of decoder steps a stream gained per pass."""
    metrics = httpx.get(srv.base_url + "/metrics").text
    return float(metrics.split("\nvoxtral_accepted_steps_per_pass ")[1].split()[0])


@pytest.fixture(scope="module")
def pad_heavy_model(tmp_path_factory):
    """tiny whose greedy output is about half pads: drafted passes verify several steps."""
    from voxtral.testing.checkpoint import make_checkpoint

    ckpt = make_checkpoint(tmp_path_factory.mktemp("pad_heavy"), preset="tiny", layout="native", pad_gain=8.0)
    return voxtral.load(ckpt["native"], download=False)


def test_one_delta_per_token_when_a_pass_verifies_several_steps(pad_heavy_model, clip_path):
    """Clients count tokens by deltas (the live latency of token k is its
    delta's arrival): a pass that accepts several drafted steps must still send
    one delta per token, not one per pass."""
    pcm, samples = _int16_clip(pad_heavy_model, clip_path)
    # all at once, fed 8 tokens' audio per step: the audio waits, passes verify drafts
    with running_server(pad_heavy_model, names=(NAME,), feed_seconds_per_step=0.64) as srv:
        done, before = transcribe_ws(srv.ws_url, pcm, model=NAME)
        steps_per_pass = _steps_per_pass(srv)
    assert steps_per_pass > 1.2  # (1.4 measured: about half pads)
    deltas = [e["delta"] for e in before if e["type"] == "transcription.delta"]
    ref_text, ref_tokens = _reference(pad_heavy_model, samples)
    assert len(deltas) == ref_tokens
    assert "".join(deltas) == done["text"] == ref_text


def test_a_session_behind_real_time_catches_up_in_drafted_passes():
    """Audio that waits (here: a whole utterance sent at once) is fed
    draft_steps tokens per scheduler step, so passes verify several drafted
    steps (3.75 per pass measured; 2.81 when fed 0.16 s, 2 tokens, per step
    as before). The trained model emits pads at a speech-like rate."""
    from trained_util import HELDOUT_DIR, MODEL_DIR

    trained = voxtral.load(MODEL_DIR, download=False)
    pcm, samples = _int16_clip(trained, HELDOUT_DIR / "utt016.flac")
    with running_server(trained, names=(NAME,)) as srv:
        done, _ = transcribe_ws(srv.ws_url, pcm, model=NAME)
        steps_per_pass = _steps_per_pass(srv)
    assert steps_per_pass > 3.2, steps_per_pass
    assert done["text"] == _reference(trained, samples)[0]


def test_realtime_delay_from_session_update(server, model, clip_path):
    pcm, samples = _int16_clip(model, clip_path, seconds=2.5)
    done, _ = transcribe_ws(server.ws_url, pcm, delay_ms=160)
    assert done["text"] == _reference(model, samples, delay_ms=160)[0]


def test_realtime_kv_cache_and_delay_per_session(server, model, clip_path):
    """Sessions choose their own KV cache kind (and delay): the engine mixes them."""
    pcm, samples = _int16_clip(model, clip_path, seconds=2.5)
    for kind, delay in (("int8", 160), ("bf16", 480)):
        done, _ = transcribe_ws(server.ws_url, pcm, delay_ms=delay, kv_cache=kind)
        assert done["text"] == _reference(model, samples, delay_ms=delay, kv_cache=kind)[0]
    _, events = transcribe_ws(server.ws_url, pcm, kv_cache="fp8")
    assert any(e["type"] == "error" and "kv_cache" in e["error"] for e in events)


def test_realtime_two_utterances_in_one_session(server, model, clip_path):
    from websockets.sync.client import connect

    pcm, samples = _int16_clip(model, clip_path, seconds=2.0)
    ref = _reference(model, samples)[0]
    with connect(server.ws_url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        for _ in range(2):
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            ws.send(append(pcm))
            ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
            done, _ = until(ws, "transcription.done")
            assert done["text"] == ref


def test_vllm_example_client_unmodified(server, model, clip_path):
    """vLLM's own example client (tests/data/vllm_client, see its README)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(VLLM_CLIENT / "shims"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [
            sys.executable,
            str(VLLM_CLIENT / "openai_realtime_client.py"),
            "--audio_path",
            str(clip_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    ).stdout
    assert "Session created: sess-" in out
    # what the client sends: librosa-style float samples * 32767 -> int16
    x = load_audio(str(clip_path), target_rate=16000)
    ref_text, ref_tokens = _reference(model, (x * 32767).astype(np.int16))
    assert f"Final transcription: {ref_text}\n" in out
    assert f"'completion_tokens': {ref_tokens}" in out


def test_concurrent_sessions_equal_single_streams(server, model, audio_dir):
    """Sessions with different audio, chunk sizes and pacing, stepped in one
    batch by the server, each get the single-stream transcript."""
    wavs = sorted(audio_dir.glob("*.wav"))[:3]
    jobs = [
        (_int16_clip(model, p, seconds=3.0 + i), chunk, pace)
        for i, (p, chunk, pace) in enumerate(zip(wavs, (2560, 9000, 640), (0.01, 0.0, 0.002), strict=False))
    ]
    results = [None] * len(jobs)
    manager = server.app.state.manager
    steps0, rows0 = manager.metrics.decoder_steps, manager.metrics.batch_rows

    def run(i):
        (pcm, _), chunk, pace = jobs[i]
        results[i] = transcribe_ws(server.ws_url, pcm, chunk_bytes=chunk, pace=pace)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for ((_, samples), _, _), done in zip(jobs, results, strict=True):
        text, tokens = _reference(model, samples)
        assert done["text"] == text and done["usage"]["completion_tokens"] == tokens
    # some steps really carried more than one stream
    assert manager.metrics.batch_rows - rows0 > manager.metrics.decoder_steps - steps0


# ---- bad input ----
BAD = [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    (json.dumps({"type": "response.create"}), "unknown_event"),
    (json.dumps({"no": "type"}), "unknown_event"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": ""}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": 5}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.commit", "final": "yes"}), "invalid_event"),
    (json.dumps({"type": "session.update", "model": "gpt-4o"}), "model_not_found"),
    (json.dumps({"type": "session.update", "transcription_delay_ms": 100}), "invalid_event"),
    (json.dumps({"type": "session.update", "transcription_delay_ms": "480"}), "invalid_event"),
]


def test_bad_messages_get_error_events_and_session_survives(model, clip_path):
    pcm, samples = _int16_clip(model, clip_path, seconds=2.0)
    from websockets.sync.client import connect

    with running_server(model, names=(NAME,), max_message_bytes=4096) as srv, connect(srv.ws_url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        for message, code in BAD + [("x" * 5000, "message_too_large")]:
            ws.send(message)
            event = recv_json(ws)
            assert event["type"] == "error" and event["code"] == code, (message[:40], event)
            assert isinstance(event["error"], str) and event["error"]
        ws.send(b"\x00\x01binary")
        assert recv_json(ws)["code"] == "invalid_event"
        # the same session still transcribes correctly
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for start in range(0, len(pcm), 2000):  # base64 + JSON stays under the 4096-byte limit
            ws.send(append(pcm[start : start + 2000]))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        done, _ = until(ws, "transcription.done")
        assert done["text"] == _reference(model, samples)[0]
        errors = httpx.get(srv.base_url + "/metrics").text
        assert 'voxtral_errors_total{code="invalid_audio"} 4' in errors


def test_api_key(model, clip_path):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with running_server(model, api_key="s3cret", names=(NAME,)) as srv:
        assert httpx.get(srv.base_url + "/health").status_code == 200
        for path in ("/v1/models", "/metrics"):
            assert httpx.get(srv.base_url + path).status_code == 401
            assert httpx.get(srv.base_url + path, headers={"Authorization": "Bearer nope"}).status_code == 401
            assert httpx.get(srv.base_url + path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": clip_path.read_bytes()})
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
        with pytest.raises(InvalidStatus) as info:
            with connect(srv.ws_url):
                pass
        assert info.value.response.status_code == 403
        pcm, samples = _int16_clip(model, clip_path, seconds=1.0)
        done, _ = transcribe_ws(srv.ws_url, pcm, headers={"Authorization": "Bearer s3cret"})
        assert done["text"] == _reference(model, samples)[0]


def test_session_limit_and_idle_timeout(model):
    from websockets.sync.client import connect

    with running_server(model, max_sessions=2, idle_timeout_seconds=0.5) as srv:
        with connect(srv.ws_url) as a, connect(srv.ws_url) as b:
            assert recv_json(a)["type"] == recv_json(b)["type"] == "session.created"
            with connect(srv.ws_url) as c:
                event = recv_json(c)
                assert event["type"] == "error" and event["code"] == "too_many_sessions"
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    c.recv(timeout=5)
                assert closed.value.rcvd.code == 1013
            r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": b"RIFF"})
            assert r.status_code == 429
            # idle: no message for 0.5 s
            event = recv_json(a, timeout=5)
            assert event["type"] == "error" and event["code"] == "idle_timeout"
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                a.recv(timeout=5)
        deadline = time.monotonic() + 5
        while srv.app.state.manager.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not srv.app.state.manager.sessions


def test_backlog_limit_refuses_audio_loudly(model):
    from websockets.sync.client import connect

    with running_server(model, max_backlog_seconds=1.0) as srv, connect(srv.ws_url) as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(append(pcm16(np.zeros(32000, dtype=np.float32))))  # 2 s at once > 1 s limit
        event = recv_json(ws)
        assert event["type"] == "error" and event["code"] == "server_overloaded"
        metrics = httpx.get(srv.base_url + "/metrics").text
        assert "voxtral_dropped_audio_seconds_total 2\n" in metrics


# ---- OpenAI transcription endpoint through the official client ----
@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")


def test_openai_client_formats(openai_client, model, clip_path):
    samples = load_audio(str(clip_path), target_rate=16000)
    ref = model.transcribe(samples, sample_rate=16000)
    with open(clip_path, "rb") as f:
        result = openai_client.audio.transcriptions.create(model=NAME, file=f)
    assert result.text == ref.text
    with open(clip_path, "rb") as f:
        text = openai_client.audio.transcriptions.create(model=NAME, file=f, response_format="text")
    assert text.strip() == ref.text.strip()
    with open(clip_path, "rb") as f:
        verbose = openai_client.audio.transcriptions.create(
            model=NAME, file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert verbose.text == ref.text
    assert abs(verbose.duration - samples.shape[0] / 16000) < 1e-3
    assert [s.text for s in verbose.segments] == [s.text for s in ref.segments]
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w.word.strip(), round(w.start, 3), round(w.end, 3)) for w in ref.words
    ]
    for fmt, head in (("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n00:00:")):
        with open(clip_path, "rb") as f:
            subs = openai_client.audio.transcriptions.create(model=NAME, file=f, response_format=fmt)
        if ref.segments:
            assert subs.startswith(head) and " --> " in subs


def test_openai_client_stream(openai_client, model, clip_path):
    samples = load_audio(str(clip_path), target_rate=16000)
    ref = model.transcribe(samples, sample_rate=16000)
    with open(clip_path, "rb") as f:
        events = list(openai_client.audio.transcriptions.create(model=NAME, file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(done) == 1 and done[0].text == ref.text == "".join(deltas)


def test_openai_client_errors(openai_client, clip_path):
    import openai

    with open(clip_path, "rb") as f, pytest.raises(openai.NotFoundError):
        openai_client.audio.transcriptions.create(model="whisper-1", file=f)
    with pytest.raises(openai.BadRequestError):
        openai_client.audio.transcriptions.create(model=NAME, file=("x.wav", b"not a wav file at all"))
    with open(clip_path, "rb") as f, pytest.raises(openai.BadRequestError):
        openai_client.audio.transcriptions.create(model=NAME, file=f, response_format="docx")


def test_upload_too_large(model, clip_path):
    with running_server(model, max_upload_bytes=1000) as srv:
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": clip_path.read_bytes()})
        assert r.status_code == 413


def test_serve_cli_rejects_bad_options(capsys):
    from voxtral.cli import main

    assert main(["serve", "--max-sessions", "0", "--model", "/nonexistent"]) == 2
    assert "max-sessions" in capsys.readouterr().err


def test_serve_cli_draft_options_reach_every_session():
    from voxtral.cli import main
    from voxtral.options import Options
    from voxtral.server.main import build_parser, settings_from

    args = build_parser().parse_args(["--model", "/nonexistent", "--draft-steps", "3", "--drafts", "pad"])
    options = settings_from(args).options
    assert (options.draft_steps, options.drafts) == (3, "pad")
    default = settings_from(build_parser().parse_args(["--model", "/nonexistent"])).options
    assert (default.draft_steps, default.drafts) == (Options().draft_steps, Options().drafts)
    for bad in (["--drafts", "nope"], ["--draft-steps", "0"]):
        assert main(["serve", "--model", "/nonexistent", *bad]) == 2
