"""``python -m voxtral wyoming`` as a running server, driven by the ``wyoming``
package's own client: describe -> info, transcribe + audio -> streaming
transcript events and the transcript, equal to offline transcription of the
audio sent (resampled and downmixed as any input is); the serve limits apply."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("wyoming")

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.info import Describe, Info

import voxtral
from server_util import free_port
from voxtral.audio import Resampler, load_audio, pcm_bytes_to_float

NAME = "voxtral-test"


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@pytest.fixture(scope="module")
def wyoming_uri(tiny_ckpt):
    uri = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral",
            "wyoming",
            "--uri",
            uri,
            "--model",
            str(tiny_ckpt["native"]),
            "--served-model-name",
            NAME,
            "--max-sessions",
            "1",
            "--no-download",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stderr.readline()
        deadline = time.monotonic() + 60
        while True:  # the port opens after the model has loaded
            try:
                asyncio.run(_exchange(uri, [Describe().event()], Info))
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _exchange(uri: str, events, until, timeout: float = 120.0) -> list:
    """Send events with the package's client; read until an event of class ``until``."""
    async with AsyncClient.from_uri(uri) as client:
        for e in events:
            await client.write_event(e)
        got = []
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            assert event is not None, "the server closed the connection"
            got.append(event)
            if until.is_type(event.type):
                return got


def _utterance(pcm: bytes, rate: int, width: int, channels: int, chunk_bytes: int = 4096) -> list:
    events = [Transcribe(language="en").event(), AudioStart(rate=rate, width=width, channels=channels).event()]
    for i in range(0, len(pcm), chunk_bytes):
        events.append(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + chunk_bytes]).event())
    return events + [AudioStop().event()]


def _reference(model, samples16: np.ndarray) -> str:
    s = model.stream()
    return "".join(e.text for e in s.feed(samples16) + s.finish())


def test_describe_info(wyoming_uri):
    (event,) = asyncio.run(_exchange(wyoming_uri, [Describe().event()], Info))
    info = Info.from_event(event)
    (asr,) = info.asr
    assert asr.name == "voxtral" and asr.installed and asr.supports_transcript_streaming
    assert asr.models[0].name == NAME and "en" in asr.models[0].languages


@pytest.mark.parametrize("rate,channels", [(16000, 1), (48000, 2)])
def test_transcribe_streams_and_equals_offline(wyoming_uri, model, audio_dir, rate, channels):
    x = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav", target_rate=rate)[: 3 * rate]
    frames = np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], axis=1)  # channels differ
    pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes()
    events = asyncio.run(_exchange(wyoming_uri, _utterance(pcm, rate, 2, channels), TranscriptStop))
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"]
    assert set(kinds[1:-2]) <= {"transcript-chunk"}
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type))
    text = Transcript.from_event(events[-2]).text
    assert TranscriptStart.from_event(events[0]).language == "en"
    # what the server decodes: the PCM as sent, downmixed and resampled as one signal
    samples = pcm_bytes_to_float(pcm, "s16le", channels=channels)
    assert text == chunks == _reference(model, Resampler(rate, 16000)(samples, last=True))
    assert len(text) > 5


def test_two_utterances_on_one_connection_and_limits(wyoming_uri, model, audio_dir):
    x = load_audio(audio_dir / "jfk.wav")
    a, b = x[: 2 * 16000], x[2 * 16000 : 4 * 16000]

    async def run():
        out = []
        async with AsyncClient.from_uri(wyoming_uri) as client:
            for part in (a, b):
                for e in _utterance((part * 32767).astype("<i2").tobytes(), 16000, 2, 1):
                    await client.write_event(e)
                while True:
                    e = await asyncio.wait_for(client.read_event(), 120)
                    if Transcript.is_type(e.type):
                        out.append(Transcript.from_event(e).text)
                    if TranscriptStop.is_type(e.type):
                        break
            # --max-sessions 1: a second connection starting audio while this one holds the session
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await asyncio.sleep(0.2)
            async with AsyncClient.from_uri(wyoming_uri) as other:
                await other.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                refused = await asyncio.wait_for(other.read_event(), 30)
            await client.write_event(AudioStop().event())
        return out, refused

    texts, refused = asyncio.run(run())
    pcm_float = [np.frombuffer((p * 32767).astype("<i2").tobytes(), "<i2").astype(np.float32) / 32768 for p in (a, b)]
    assert texts == [_reference(model, p) for p in pcm_float]
    assert Error.is_type(refused.type) and Error.from_event(refused).code == "too_many_sessions"
