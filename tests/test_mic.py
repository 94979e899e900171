"""The microphone path end to end through a real audio server: a PulseAudio
daemon with a pipe source as the default microphone (see
../shared/docs/testing-audio.md), captured by the CLI through PortAudio and
sounddevice exactly as a user's microphone would be."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import voxtral
from voxtral.audio import decode_wav

F_SETPIPE_SZ = 1031
BLOCK = 160  # 10 ms at 16 kHz


class PulseRig:
    """A private PulseAudio daemon whose default source is a FIFO we feed in real time."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="voxtral-pulse-"))
        self.fifo = self.dir / "mic.fifo"
        self.socket = self.dir / "native"
        script = self.dir / "default.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-pipe-source source_name=testmic file={self.fifo} format=s16le rate=16000 channels=1\n"
            "set-default-source testmic\n"
        )
        self.env = dict(
            os.environ,
            PULSE_SERVER=f"unix:{self.socket}",
            PULSE_RUNTIME_PATH=str(self.dir / "run"),
            PULSE_STATE_PATH=str(self.dir / "state"),
            PULSE_COOKIE=str(self.dir / "cookie"),
        )
        self.daemon = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(script),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--realtime=no",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not (self.socket.exists() and self.fifo.exists()):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                err = self.daemon.stderr.read().decode(errors="replace") if self.daemon.poll() is not None else ""
                self.stop()
                pytest.fail(f"PulseAudio did not start: {err[-500:]}")
            time.sleep(0.02)
        self._queue: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._running = True
        self.played = threading.Event()
        self._fd = os.open(self.fifo, os.O_RDWR)
        fcntl.fcntl(self._fd, F_SETPIPE_SZ, 4096)  # no stale burst of queued audio
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def play(self, samples_int16: np.ndarray) -> None:
        with self._lock:
            self._queue.append(samples_int16.astype("<i2"))
            self.played.clear()

    def _feed(self) -> None:
        # Real-time feeder: the test audio when queued, silence otherwise
        # (the pipe source produces audio only while written to).
        t_next = time.monotonic()
        silence = np.zeros(BLOCK, dtype="<i2").tobytes()
        while self._running:
            with self._lock:
                if self._queue:
                    head = self._queue[0]
                    block, rest = head[:BLOCK], head[BLOCK:]
                    if block.shape[0] < BLOCK:
                        block = np.concatenate([block, np.zeros(BLOCK - block.shape[0], dtype="<i2")])
                    if rest.shape[0]:
                        self._queue[0] = rest
                    else:
                        self._queue.pop(0)
                        if not self._queue:
                            self.played.set()
                    data = block.tobytes()
                else:
                    data = silence
            try:
                os.write(self._fd, data)
            except OSError:
                return
            t_next += BLOCK / 16000
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.monotonic()  # do not catch up on missed time

    def stop(self) -> None:
        self._running = False
        if getattr(self, "_thread", None):
            self._thread.join(timeout=2)
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pulse():
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (apt install pulseaudio libportaudio2; .ci/run does)")
    if _portaudio_missing():
        pytest.skip(_portaudio_missing())
    rig = PulseRig()
    yield rig
    rig.stop()


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where needle occurs exactly in haystack, or -1."""
    first = needle[np.flatnonzero(needle)[0]]
    offset = np.flatnonzero(needle)[0]
    for i in np.flatnonzero(haystack == first):
        s = i - offset
        if (
            s >= 0
            and s + needle.shape[0] <= haystack.shape[0]
            and np.array_equal(haystack[s : s + needle.shape[0]], needle)
        ):
            return int(s)
    return -1


def test_microphone_capture_end_to_end(pulse, tiny_ckpt, audio_dir, tmp_path):
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    import wave

    with wave.open(str(wav)) as w:
        known = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    record = tmp_path / "mic.wav"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--mic",
            "--model",
            str(tiny_ckpt["native"]),
            "--record",
            str(record),
            "--format",
            "jsonl",
        ],
        env=pulse.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until the CLI is listening
        line = proc.stderr.readline()
        assert "listening" in line, line + proc.stderr.read()
        time.sleep(0.5)
        pulse.play(known)
        assert pulse.played.wait(timeout=60)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "dropped" not in err, err

    # The captured audio holds the recording bit-exactly.
    captured, rate = decode_wav(record.read_bytes())
    assert rate == 16000
    captured_i16 = np.round(captured * 32768.0).astype(np.int32)
    assert _find(captured_i16, known.astype(np.int32)) >= 0, "the recording is not in the captured audio"

    # The live tokens are the offline tokens of the captured audio.
    rows = [json.loads(x) for x in out.splitlines()]
    live_tokens = [r["token"] for r in rows if r["token"] >= 0]
    model = voxtral.load(tiny_ckpt["native"])
    offline = model.transcribe(captured, 16000)
    assert live_tokens == offline.token_ids
    assert len(set(live_tokens)) > 5


def _portaudio_missing() -> str | None:
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:  # the wheel is installed (a dependency), the system library is not
        return f"PortAudio is not installed ({exc}; apt install libportaudio2, as .ci/run does)"
    return None


def test_no_input_device_is_one_line_error(tiny_ckpt, tmp_path):
    if _portaudio_missing():
        pytest.skip(_portaudio_missing())
    # No audio server where the ALSA/PulseAudio default points: no input device.
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/nothing", PULSE_RUNTIME_PATH=str(tmp_path))
    for extra in ([], ["--device", "no-such-device"]):
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", "--mic", "--model", str(tiny_ckpt["native"]), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == voxtral.DeviceError.exit_code, r.stderr
        lines = [x for x in r.stderr.strip().splitlines() if x.startswith("voxtral: error")]
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "input device" in lines[0]


def test_missing_portaudio_names_what_to_install(monkeypatch):
    import importlib.abc

    class NoPortAudio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    from voxtral.live import Microphone

    with pytest.raises(voxtral.DeviceError, match="libportaudio2"):
        Microphone(16000)


def test_queue_drops_oldest_and_counts():
    from voxtral.live import DropOldestQueue

    q = DropOldestQueue(max_samples=1000)
    for i in range(10):
        q.put(np.full(300, i, dtype=np.float32))
    got = q.get_all(timeout=0)
    # the newest audio survives, in order; what went is counted
    assert got.shape[0] <= 1000 and got[-1] == 9 and np.all(np.diff(got) >= 0)
    assert q.dropped_samples + got.shape[0] == q.received_samples == 3000
    q.put(np.arange(5000, dtype=np.float32))  # one block larger than the bound
    got = q.get_all(timeout=0)
    assert got.shape[0] == 1000 and got[0] == 4000
    assert q.get_all(timeout=0.01).shape[0] == 0


def test_cli_reports_dropped_audio(tiny_ckpt, monkeypatch, capsys):
    """When the model falls behind, the CLI says how much audio was dropped."""
    from voxtral import cli, live

    class SlowMic:
        def __init__(self, sample_rate, device=None):
            self.queue = live.DropOldestQueue(sample_rate)  # 1 s
            self.sample_rate = sample_rate
            self.reads = 0

        dropped_samples = property(lambda self: self.queue.dropped_samples)
        captured_samples = property(lambda self: self.queue.received_samples)
        dropped_seconds = property(lambda self: self.queue.dropped_samples / self.sample_rate)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def read(self, timeout=1.0):
            self.reads += 1
            if self.reads > 3:
                raise KeyboardInterrupt
            for _ in range(30):  # 3 s arrive while the model was busy: 2 s must go
                self.queue.put(np.zeros(1600, dtype=np.float32))
            return self.queue.get_all(0)

    monkeypatch.setattr(live, "Microphone", SlowMic)
    rc = cli.main(["--mic", "--model", str(tiny_ckpt["native"]), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "dropped 2.00 s of audio so far" in err
    assert "dropped 6.00 s of 9.00 s captured" in err
