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
