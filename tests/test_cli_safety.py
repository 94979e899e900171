"""The command line never destroys what the user had (issue 15, CLI items):
outputs that are inputs, --force on unrelated directories, SIGTERM
temporaries, interrupted -o runs, closed or full stdout, missing files among
several, silent raw-input oddities, help and messages, progress."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import voxtral
from test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")}


def _wav(path: Path, seconds: float = 1.0) -> Path:
    import soundfile

    x = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype("f4")
    soundfile.write(path, x, 16000, subtype="PCM_16")
    return path


# ---- 1: -o naming an input ----
def test_output_that_is_an_input_is_refused(tiny_ckpt, tmp_path):
    wav = _wav(tmp_path / "mine.wav")
    before = wav.read_bytes()
    link = tmp_path / "link.wav"
    os.link(wav, link)
    for out in (wav, link, tmp_path / "." / "mine.wav"):
        r = run_cli(wav, "-o", out, "--model", tiny_ckpt["native"])
        assert r.returncode == 2 and "refusing to overwrite" in r.stderr, r.stderr
    assert wav.read_bytes() == before
    with open(wav, "rb") as f:
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", "--stdin", "-o", str(wav), "--model", str(tiny_ckpt["native"])],
            stdin=f,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
    assert r.returncode == 2 and "standard input" in r.stderr, r.stderr
    assert wav.read_bytes() == before


# ---- 2: quantize --force replaces only a previous quantize output ----
def test_quantize_force_refuses_unrelated_directories(tiny_ckpt, tmp_path):
    from voxtral.errors import UsageError
    from voxtral.quantize import quantize_model

    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"\xff\xd8 not a model")
    with pytest.raises(UsageError, match="not a quantized model directory"):
        quantize_model(tiny_ckpt["native"], precious, "q8_0", force=True)
    assert (precious / "holiday.jpg").read_bytes() == b"\xff\xd8 not a model"
    # a previous output is replaced; nothing is left beside it
    out = tmp_path / "q"
    quantize_model(tiny_ckpt["native"], out, "q8_0")
    quantize_model(tiny_ckpt["native"], out, "q4_0", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "q"]
    # "." as DST (the EBUSY case): replaced by its absolute name, no "..old-*" left behind
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "quantize", str(tiny_ckpt["native"]), ".", "--type", "q8_0", "--force", "-q"],
        cwd=out,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "q"]
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf", "tekken.json"]


# ---- 3: SIGTERM cleans up as SIGINT does ----
def _signal_after_start(args, sig, watch: Path, cwd=None, wait_for=".part", min_bytes=0):
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtral", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=cwd,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            any(wait_for in p.name and (p.is_dir() or p.stat().st_size > min_bytes) for p in watch.iterdir())
            or proc.poll() is not None
        ):
            break
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_no_temporaries_quantize(fullwidth_ckpt, tmp_path, sig):
    code, _, err = _signal_after_start(
        ["quantize", fullwidth_ckpt["native"], tmp_path / "q", "--type", "q8_0"], sig, tmp_path, wait_for=".partial-"
    )
    assert code == 128 + sig and "interrupted" in err, (code, err)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_python_dropped_still_ends_the_quantizer(tiny_ckpt, tmp_path):
    """A signal whose KeyboardInterrupt lands where Python ignores exceptions (here a
    __del__; in the failure seen, a weakref callback of the import machinery) is
    raised again before the next tensor: no output is committed, no temporaries stay."""
    script = f"""
import os, signal, sys
from voxtral import interrupts
from voxtral.quantize import quantize_model
interrupts.install()
class Drop:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
d = Drop()
del d
print("survived the signal", file=sys.stderr)
try:
    quantize_model({str(tiny_ckpt["native"])!r}, {str(tmp_path / "q")!r}, "q8_0")
except KeyboardInterrupt as exc:
    sys.exit(interrupts.exit_code(exc))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert "Exception ignored" in r.stderr and "survived the signal" in r.stderr, r.stderr  # the dropped interrupt
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_keeps_partial_transcript_and_no_temporaries(tiny_ckpt, tmp_path, sig):
    """4: an interrupted -o run keeps what was transcribed and says so; 3: no .part file is left."""
    wav = _wav(tmp_path / "long.wav", 240.0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "t.jsonl"
    code, _, err = _signal_after_start(
        [wav, "-o", out, "--format", "jsonl", "--model", tiny_ckpt["native"]], sig, out_dir, min_bytes=200
    )
    assert code == 128 + sig, (code, err)
    assert [p.name for p in out_dir.iterdir()] == ["t.jsonl"], list(out_dir.iterdir())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["source"] == str(wav) for row in rows)
    assert "kept what was transcribed" in err
    assert any(
        line == "voxtral: interrupted; kept what was transcribed so far in " + str(out) for line in err.splitlines()
    ), err


# ---- 5: closed or full stdout, closed stderr ----
def test_closed_or_full_stdout(tiny_ckpt, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    cmd = [sys.executable, "-m", "voxtral", str(wav), "--model", str(tiny_ckpt["native"])]
    r = subprocess.run(
        " ".join(cmd) + " >&-",
        shell=True,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            r = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == ["voxtral: error: cannot write the transcript: No space left on device"]
    r = subprocess.run(" ".join(cmd) + " 2>&-", shell=True, stdout=subprocess.PIPE, text=True, env=_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == voxtral.load(tiny_ckpt["native"]).transcribe(wav).text.strip()


# ---- 6: a missing file among several is skipped ----
def test_missing_file_among_several_is_skipped(tiny_ckpt, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    r = run_cli(tmp_path / "missing.wav", wav, "--model", tiny_ckpt["native"], "-q")
    assert r.returncode == voxtral.AudioError.exit_code, r.stderr
    assert f"==> {wav} <==" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.wav" in lines[0]


# ---- 7: raw-format with files, odd raw byte count, stdin on a terminal ----
def test_raw_format_with_files_and_odd_raw_input(tiny_ckpt, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    r = run_cli(wav, "--raw-format", "s16le", "--model", tiny_ckpt["native"])
    assert r.returncode == 2 and "--raw-format goes with --stdin" in r.stderr
    raw = (np.zeros(1601, "<i2").tobytes())[:-1]  # 3201 bytes: one byte short of a whole sample
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "--stdin", "--raw-format", "s16le", "--model", str(tiny_ckpt["native"])],
        input=raw,
        capture_output=True,
        env=_env(),
        timeout=120,
    )
    err = r.stderr.decode()
    assert r.returncode == 0 and "voxtral: warning: <stdin>: the raw input ends with 1 byte(s)" in err, err
    assert "frozen" not in err and "Warning:" not in err


def test_stdin_on_a_terminal_says_what_it_waits_for(tiny_ckpt):
    pty = pytest.importorskip("pty")
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin, stdout and stderr are the terminal
        os.environ.pop("VOXTRAL_MODEL_DIR", None)
        os.execv(sys.executable, [sys.executable, "-m", "voxtral", "--stdin", "--model", str(tiny_ckpt["native"])])
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Ctrl+D" not in seen and time.monotonic() < deadline:
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert b"standard input, which is a terminal" in seen, seen


# ---- 8: help and messages ----
def test_help_names_the_other_commands_and_formats():
    r = run_cli("--help")
    text = " ".join(r.stdout.split())
    for word in ("voxtral serve", "voxtral quantize", "voxtral inspect", "FLAC", "MP3"):
        assert word in text, word


def test_invalid_environment_variable_is_one_clean_warning(tiny_ckpt, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    r = run_cli(wav, "--model", tiny_ckpt["native"], env_extra={"VOXTRAL_NUM_THREADS": "abc"})
    assert r.returncode == 0, r.stderr
    assert "<frozen" not in r.stderr and "voxtral: warning: VOXTRAL_NUM_THREADS='abc' ignored" in r.stderr


def test_quantized_model_message_names_the_option(tiny_ckpt, tmp_path):
    from voxtral.quantize import quantize_model

    q = quantize_model(tiny_ckpt["native"], tmp_path / "q", "q8_0")
    r = run_cli(_wav(tmp_path / "a.wav"), "--model", q, "--quant", "q4_0")
    assert r.returncode == 2 and "--quant" in r.stderr and "quant=," not in r.stderr, r.stderr


# ---- 9: the README's stream example uses what flush() returns ----
def test_readme_stream_example_uses_flush():
    readme = (REPO / "README.md").read_text()
    start = readme.index("stream = model.stream(")
    block = readme[start : readme.index("```", start)]
    assert "stream.flush()" in block and "for event in stream.flush()" in block


# ---- 10: testing.checkpoint OUT and --model OUT ----
def test_checkpoint_help_and_parent_directory_message(tiny_ckpt, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "voxtral.testing.checkpoint", "--help"], capture_output=True, text=True, timeout=60
    )
    text = " ".join(r.stdout.split())
    assert "tiny (default)" in text and "OUT/native and OUT/hf" in text
    parent = tiny_ckpt["native"].parent
    if {p.name for p in parent.iterdir()} >= {"native", "hf"}:
        r = run_cli(_wav(tmp_path / "a.wav"), "--model", parent)
        assert str(parent / "native") in r.stderr, r.stderr


# ---- 11: progress names the file, n of m, ETA, and "wrote FILE" ----
def test_progress_label_eta_and_wrote(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from voxtral.cli import Progress, _clock, _label

    assert _label(1, ["a", "b", "c"]) == "(2/3) " and _label(0, ["a"]) == ""
    assert _clock(75) == "1:15" and _clock(3725) == "1:02:05"
    p = Progress(True)
    monkeypatch.setattr("time.monotonic", lambda: 100.0)
    p.show("(1/2) a.wav", 0.0, 10.0)
    monkeypatch.setattr("time.monotonic", lambda: 110.0)
    p.show("(1/2) a.wav", 5.0, 10.0)
    err = capsys.readouterr().err
    assert "(1/2) a.wav" in err and "ETA 0:10" in err
    monkeypatch.undo()
    wav = _wav(tmp_path / "a.wav")
    r = run_cli(wav, "-o", tmp_path / "t.txt", "--model", tiny_ckpt["native"])
    assert r.returncode == 0 and f"voxtral: wrote {tmp_path / 't.txt'}" in r.stderr, r.stderr
