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
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=600,
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
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "--stdin", "--model", str(tiny_ckpt["native"])],
        input=wav.read_bytes(),
        capture_output=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == expected.text + "\n"
    pcm = _pcm(audio_dir)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--stdin",
            "--raw-format",
            "s16le",
            "--format",
            "jsonl",
            "--model",
            str(tiny_ckpt["native"]),
        ],
        input=pcm,
        capture_output=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert _tokens(r.stdout.decode()) == expected.token_ids
    # a WAV header written by a pipe (unknown sizes) is read to the end
    raw = bytearray(wav.read_bytes())
    data_at = raw.find(b"data")
    raw[4:8] = b"\xff\xff\xff\xff"
    raw[data_at + 4 : data_at + 8] = b"\xff\xff\xff\xff"
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "--stdin", "--format", "jsonl", "--model", str(tiny_ckpt["native"])],
        input=bytes(raw),
        capture_output=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert _tokens(r.stdout.decode()) == expected.token_ids


def test_stdin_odd_pieces_and_cut_mid_sample(tiny_ckpt, tiny_model, audio_dir):
    import random
    import time

    import numpy as np

    pcm = _pcm(audio_dir)
    cut = pcm[: 3 * 16000 * 2 + 1]  # ends inside a sample
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--stdin",
            "--raw-format",
            "s16le",
            "--format",
            "jsonl",
            "--model",
            str(tiny_ckpt["native"]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", "--stdin", "--model", str(tiny_ckpt["native"])],
            input=data,
            capture_output=True,
            text=False,
            timeout=300,
        )
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
    for n, (block, seg) in enumerate(zip(blocks, expected.segments, strict=True), 1):
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
    cues = r.stdout[len("WEBVTT\n\n") :].strip("\n").split("\n\n")
    assert len(cues) == len(expected.segments)
    for cue in cues:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d", cue.split("\n")[0])


# ---- issue 8: the CLI like the tools people know ------------------------------

_BLOCK_HEAVY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy.") or name == "voxtral._kernels":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from voxtral.cli import main
try:
    main([{arg!r}])
except SystemExit as e:
    heavy = [m for m in sys.modules if m == "numpy" or m == "voxtral._kernels"]
    print("EXIT", e.code, "HEAVY", heavy)
"""


@pytest.mark.parametrize("arg", ["--help", "--version"])
def test_help_and_version_need_neither_numpy_nor_the_extension(arg):
    # numpy and the C extension cannot even be imported here; a broken
    # VOXTRAL_ISA (which the extension would reject) does not matter either.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")}
    env.update(VOXTRAL_ISA="bogus", VOXTRAL_NUM_THREADS="abc")
    r = subprocess.run(
        [sys.executable, "-c", _BLOCK_HEAVY.format(arg=arg)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "EXIT 0 HEAVY []" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# Every check must happen before the model loads: with a model directory that
# does not exist, a check made after loading would exit 4 (model not found).
@pytest.mark.parametrize(
    "args",
    [
        ["x.wav", "--threads", "100000"],
        ["x.wav", "--threads", "0"],
        ["x.wav", "--delay-ms", "100"],
        ["x.wav", "--delay-ms", "4000"],
        ["x.wav", "--delay-ms", "0"],
        ["--stdin", "--raw-rate", "0"],
        ["--stdin", "--raw-rate", "-16000"],
        ["--stdin", "--raw-rate", "1"],
        ["--stdin", "--raw-rate", "100000000"],
        ["--stdin", "--raw-format", "mp3"],
        ["x.wav", "--device", "1"],
        ["--stdin", "--device", "default"],
        ["x.wav", "--record", "out.wav"],
        ["x.wav", "y.wav", "--format", "srt"],
        ["x.wav", "y.wav", "--format", "vtt", "-o", "subs.vtt"],
        ["--stdin", "--output-dir", "out"],
        ["x.wav", "sub/x.wav", "--output-dir", "out"],
        ["missing.wav"],
        [],
    ],
)
def test_argument_checks_before_the_model_loads(args, tmp_path):
    for name in ("x.wav", "y.wav", "sub/x.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"RIFF")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", *args, "--model", str(tmp_path / "no-model")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")},
    )
    _one_line_error(r, voxtral.UsageError.exit_code)


def test_output_and_output_dir_exclude_each_other(tmp_path):
    r = run_cli("x.wav", "-o", tmp_path / "a.txt", "--output-dir", tmp_path)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_several_files_one_output_each_and_a_bad_one_skipped(tiny_ckpt, tiny_model, audio_dir, tmp_path):
    a = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    b = audio_dir / "jfk.wav"
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "subs"
    # options and file names in any order (intermixed)
    r = run_cli(a, "--format", "srt", bad, "--output-dir", out, b, "--model", tiny_ckpt["native"], "-q")
    assert r.returncode == voxtral.AudioError.exit_code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxtral: error: ") and "broken.wav" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["jfk.srt", "night1968_5s_dont_worry_about_him.srt"]
    for wav in (a, b):
        alone = run_cli(wav, "--format", "srt", "--model", tiny_ckpt["native"])
        assert alone.returncode == 0, alone.stderr
        assert (out / (wav.stem + ".srt")).read_text() == alone.stdout
        assert alone.stdout.startswith("1\n")  # each document numbers its own cues from 1


def test_several_files_to_stdout_are_separated(tiny_ckpt, tiny_model, audio_dir, tmp_path):
    a = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    b = audio_dir / "jfk.wav"
    r = run_cli("--model", tiny_ckpt["native"], a, b)
    assert r.returncode == 0, r.stderr
    ta, tb = tiny_model.transcribe(a).text, tiny_model.transcribe(b).text
    assert r.stdout == f"==> {a} <==\n{ta}\n==> {b} <==\n{tb}\n"
    r = run_cli("--model", tiny_ckpt["native"], a, b, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    sources = [json.loads(line)["source"] for line in r.stdout.splitlines()]
    assert sources[0] == str(a) and sources[-1] == str(b) and sorted(set(sources)) == sorted({str(a), str(b)})


def test_output_file_is_replaced_atomically(tiny_ckpt, tiny_model, audio_dir, tmp_path):
    out = tmp_path / "transcript.txt"
    out.write_text("precious\n")
    os.chmod(out, 0o640)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    # a failed run (bad audio, or no model) leaves the old file whole, and no temporary file
    r = run_cli(bad, "-o", out, "--model", tiny_ckpt["native"])
    assert r.returncode == voxtral.AudioError.exit_code
    r = run_cli(audio_dir / "jfk.wav", "-o", out, "--model", tmp_path / "no-model")
    assert r.returncode == voxtral.ModelNotFoundError.exit_code
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "transcript.txt"]
    # a successful one replaces it, keeping its permissions
    r = run_cli(audio_dir / "jfk.wav", "-o", out, "--model", tiny_ckpt["native"])
    assert r.returncode == 0, r.stderr
    assert out.read_text() == tiny_model.transcribe(audio_dir / "jfk.wav").text + "\n"
    assert (os.stat(out).st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "transcript.txt"]


def test_atomic_output_on_exception(tmp_path):
    from voxtral.output import AtomicOutput

    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with AtomicOutput(target) as out:
            out.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]
    with AtomicOutput(target) as out:
        out.write("new")
        assert target.read_text() == "old"  # not visible before the end
    assert target.read_text() == "new"
    with pytest.raises(voxtral.UsageError, match="cannot write"):
        with AtomicOutput(tmp_path / "no-such-dir" / "t.txt"):
            pass


def test_output_name_like_whisper():
    from voxtral.cli import output_path

    assert output_path("out", "talks/day 1.wav", "text") == os.path.join("out", "day 1.txt")
    assert output_path("out", "a.b.flac", "vtt") == os.path.join("out", "a.b.vtt")
    assert output_path("out", "noext", "jsonl") == os.path.join("out", "noext.jsonl")


def test_list_devices_without_portaudio_is_one_line():
    try:
        import sounddevice  # noqa: F401

        pytest.skip("PortAudio is installed here")
    except OSError:
        pass
    except ImportError:
        pass
    r = run_cli("--list-devices")
    _one_line_error(r, voxtral.DeviceError.exit_code)


def test_list_devices_lists_inputs(monkeypatch, capsys):
    import types

    from voxtral import cli

    fake = types.SimpleNamespace(
        query_devices=lambda: [
            {"name": "HDMI out", "max_input_channels": 0, "default_samplerate": 48000.0},
            {"name": "USB mic", "max_input_channels": 1, "default_samplerate": 44100.0},
            {"name": "Webcam", "max_input_channels": 2, "default_samplerate": 16000.0},
        ],
        default=types.SimpleNamespace(device=(2, 0)),
        PortAudioError=OSError,
    )
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert cli.main(["--list-devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "USB mic" in out[0] and "1 ch" in out[0] and not out[0].startswith("*")
    assert out[1].startswith("*") and "Webcam" in out[1] and "16000 Hz" in out[1]


def test_first_run_message_names_the_installed_command(audio_dir, tmp_path):
    from voxtral import hub

    r = run_cli(
        audio_dir / "jfk.wav",
        env_extra={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)},
    )
    _one_line_error(r, voxtral.ModelNotFoundError.exit_code)
    assert hub.download_command() in r.stderr
    assert ("pip install" in r.stderr) == (hub._hub_module() is None)
    assert len(r.stderr) < 400


def test_inspect_dispatch(tiny_ckpt, tmp_path):
    r = run_cli("inspect", tiny_ckpt["native"])
    assert r.returncode == 0, r.stderr
    assert "loadable: yes" in r.stdout
    r = run_cli("inspect", tmp_path)
    assert r.returncode == voxtral.ModelFileError.exit_code
    assert "NOT loadable" in r.stdout
