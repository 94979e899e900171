"""The command line as a user runs it: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import voxtral


def run_cli(*args, env_extra=None, input=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "voxtral", *map(str, args)],
        capture_output=True, text=True, env=env, input=input, timeout=600,
    )


def test_version_and_help():
    assert voxtral.__version__.count(".") == 2
    r = run_cli("--help")
    assert r.returncode == 0
    assert "--model" in r.stdout and "--delay-ms" in r.stdout
    r = run_cli("--version")
    assert r.returncode == 0 and voxtral.__version__ in r.stdout


def test_transcribes_file_like_the_api(tiny_ckpt, audio_dir):
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    model = voxtral.load(tiny_ckpt["native"])
    expected = model.transcribe(wav)
    r = run_cli(wav, "--model", tiny_ckpt["native"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected.text + "\n"
    # the model directory can come from the environment too, and jsonl carries the tokens
    r = run_cli(wav, "--format", "jsonl", env_extra={"VOXTRAL_MODEL_DIR": str(tiny_ckpt["native"])})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["token"] for row in rows if row["token"] >= 0] == expected.token_ids
    assert all(row["start"] <= row["end"] for row in rows)


def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxtral: error: "), r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_wav(tiny_ckpt, tmp_path):
    bad = tmp_path / "song.mp3"
    bad.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 500)
    r = run_cli(bad, "--model", tiny_ckpt["native"])
    _one_line_error(r, voxtral.AudioError.exit_code)
    assert "song.mp3" in r.stderr


def test_truncated_wav(tiny_ckpt, audio_dir, tmp_path):
    raw = (audio_dir / "jfk.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) // 2])
    r = run_cli(cut, "--model", tiny_ckpt["native"])
    _one_line_error(r, voxtral.AudioError.exit_code)


def test_missing_file_and_bad_delay(tiny_ckpt, audio_dir):
    r = run_cli("does-not-exist.wav", "--model", tiny_ckpt["native"])
    _one_line_error(r, voxtral.UsageError.exit_code)
    r = run_cli(audio_dir / "jfk.wav", "--model", tiny_ckpt["native"], "--delay-ms", "100")
    _one_line_error(r, voxtral.UsageError.exit_code)
    r = run_cli(audio_dir / "jfk.wav", "--model", tiny_ckpt["native"], "--delay-ms", "4000")
    _one_line_error(r, voxtral.UsageError.exit_code)


def test_no_model_anywhere(audio_dir, tmp_path):
    r = run_cli(
        audio_dir / "jfk.wav",
        env_extra={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)},
    )
    _one_line_error(r, voxtral.ModelNotFoundError.exit_code)
    assert "VOXTRAL_MODEL_DIR" in r.stderr or "--model" in r.stderr


def test_corrupt_model_dir(tiny_ckpt, audio_dir, tmp_path):
    import shutil

    dst = tmp_path / "m"
    shutil.copytree(tiny_ckpt["native"], dst)
    st = dst / "consolidated.safetensors"
    st.write_bytes(st.read_bytes()[:-4096])
    r = run_cli(audio_dir / "jfk.wav", "--model", dst)
    _one_line_error(r, voxtral.CheckpointError.exit_code)
    assert "consolidated.safetensors" in r.stderr


# ---- stdin ---------------------------------------------------------------

def _pcm(audio_dir, name="night1968_5s_dont_worry_about_him.wav"):
    import wave

    with wave.open(str(audio_dir / name)) as w:
        return w.readframes(w.getnframes())


def _tokens(jsonl: str) -> list[int]:
    return [json.loads(line)["token"] for line in jsonl.splitlines() if json.loads(line)["token"] >= 0]


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"])


def test_stdin_wav_and_raw(tiny_ckpt, tiny_model, audio_dir):
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    expected = tiny_model.transcribe(wav)
    r = subprocess.run([sys.executable, "-m", "voxtral", "--stdin", "--model", str(tiny_ckpt["native"])],
                       input=wav.read_bytes(), capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == expected.text + "\n"
    pcm = _pcm(audio_dir)
    r = subprocess.run([sys.executable, "-m", "voxtral", "--stdin", "--raw-format", "s16le", "--format", "jsonl",
                        "--model", str(tiny_ckpt["native"])],
                       input=pcm, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _tokens(r.stdout.decode()) == expected.token_ids
    # a WAV header written by a pipe (unknown sizes) is read to the end
    raw = bytearray(wav.read_bytes())
    data_at = raw.find(b"data")
    raw[4:8] = b"\xff\xff\xff\xff"
    raw[data_at + 4 : data_at + 8] = b"\xff\xff\xff\xff"
    r = subprocess.run([sys.executable, "-m", "voxtral", "--stdin", "--format", "jsonl", "--model", str(tiny_ckpt["native"])],
                       input=bytes(raw), capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _tokens(r.stdout.decode()) == expected.token_ids


def test_stdin_odd_pieces_and_cut_mid_sample(tiny_ckpt, tiny_model, audio_dir):
    import random
    import time

    import numpy as np

    pcm = _pcm(audio_dir)
    cut = pcm[: 3 * 16000 * 2 + 1]  # ends inside a sample
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "--stdin", "--raw-format", "s16le", "--format", "jsonl",
         "--model", str(tiny_ckpt["native"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    rnd = random.Random(7)
    i = 0
    while i < len(cut):
        n = rnd.choice([1, 3, 7, 333, 1001, 4099])
        proc.stdin.write(cut[i : i + n])
        proc.stdin.flush()
        i += n
        if rnd.random() < 0.05:
            time.sleep(0.01)
    out, err = proc.communicate(timeout=600)  # closes stdin: the stream ends mid-sample
    assert proc.returncode == 0, err
    samples = np.frombuffer(cut[: len(cut) - 1], "<i2").astype(np.float32) / 32768
    assert _tokens(out.decode()) == tiny_model.transcribe(samples, 16000).token_ids


def test_stdin_empty_or_garbage(tiny_ckpt):
    for data in (b"", b"\x01"):
        r = subprocess.run([sys.executable, "-m", "voxtral", "--stdin", "--model", str(tiny_ckpt["native"])],
                           input=data, capture_output=True, text=False, timeout=300)
        assert r.returncode == voxtral.AudioError.exit_code, r.stderr
        assert r.stderr.decode().count("voxtral: error:") == 1


# ---- output formats --------------------------------------------------------

_SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


def _secs(h, m, s, ms):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_srt_vtt_and_output_file(tiny_ckpt, tiny_model, audio_dir, tmp_path):
    import re

    wav = audio_dir / "jfk.wav"
    expected = tiny_model.transcribe(wav)
    assert expected.segments
    out = tmp_path / "out.srt"
    r = run_cli(wav, "--model", tiny_ckpt["native"], "--format", "srt", "--output", out)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    blocks = out.read_text().strip("\n").split("\n\n")
    assert len(blocks) == len(expected.segments)
    last_end = 0.0
    for n, (block, seg) in enumerate(zip(blocks, expected.segments), 1):
        lines = block.split("\n")
        assert lines[0] == str(n)
        m = re.fullmatch(_SRT_TIME + " --> " + _SRT_TIME, lines[1])
        assert m, lines[1]
        start, end = _secs(*m.groups()[:4]), _secs(*m.groups()[4:])
        assert last_end - 1e-9 <= start <= end <= expected.duration + 2
        assert abs(start - seg.start) < 0.002
        last_end = start
        assert " ".join(lines[2:]) == " ".join(seg.text.split())
    r = run_cli(wav, "--model", tiny_ckpt["native"], "--format", "vtt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("WEBVTT\n\n")
    cues = r.stdout[len("WEBVTT\n\n"):].strip("\n").split("\n\n")
    assert len(cues) == len(expected.segments)
    for cue in cues:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d", cue.split("\n")[0])
