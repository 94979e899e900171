"""Live audio from the microphone: float32 mono chunks at the model's rate as
they arrive, so that the stream can decode while audio is still coming in.
(A pipe on stdin is read by ``audio.read_audio_stream``.)"""

from __future__ import annotations

import collections
import threading

import numpy as np

from .errors import AudioError, DeviceError


class DropOldestQueue:
    """Audio blocks between a capture thread and the model, bounded in
    samples: when full, the OLDEST blocks are dropped (live transcription
    should stay live) and counted, so that the loss can be reported."""

    def __init__(self, max_samples: int):
        self.max_samples = max(1, int(max_samples))
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_samples = 0
        self.received_samples = 0

    def put(self, block: np.ndarray) -> None:
        with self._cond:
            self.received_samples += block.shape[0]
            self._blocks.append(block)
            self._queued += block.shape[0]
            while self._queued > self.max_samples and len(self._blocks) > 1:
                old = self._blocks.popleft()
                self._queued -= old.shape[0]
                self.dropped_samples += old.shape[0]
            if self._queued > self.max_samples:  # a single block larger than the bound
                excess = self._queued - self.max_samples
                self._blocks[0] = self._blocks[0][excess:]
                self._queued -= excess
                self.dropped_samples += excess
            self._cond.notify()

    def get_all(self, timeout: float) -> np.ndarray:
        """Everything queued (waits up to ``timeout`` for something)."""
        with self._cond:
            if not self._blocks and not self._closed:
                self._cond.wait(timeout)
            blocks = list(self._blocks)
            self._blocks.clear()
            self._queued = 0
        if not blocks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(blocks)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Microphone:
    """Capture from an input device in PortAudio's callback thread, through a
    ``DropOldestQueue`` (``dropped_seconds`` says how much was lost)."""

    def __init__(
        self,
        sample_rate: int,
        device: str | int | None = None,
        block_seconds: float = 0.08,
        max_queue_seconds: float = 10.0,
    ):
        try:
            import sounddevice as sd
        except OSError as exc:  # the wheel is there, the PortAudio library is not
            raise DeviceError(
                f"PortAudio is not installed ({exc}); install it (Debian/Ubuntu: apt install libportaudio2)"
            ) from None
        except ImportError:
            raise DeviceError(
                "microphone input needs sounddevice (a dependency of voxtral): pip install sounddevice"
            ) from None
        self._sd = sd
        self.sample_rate = sample_rate
        self.queue = DropOldestQueue(int(max_queue_seconds * sample_rate))
        self._closed = False
        try:
            self._stream = sd.InputStream(
                samplerate=sample_rate,
                channels=1,
                dtype="float32",
                device=device,
                blocksize=max(1, int(block_seconds * sample_rate)),
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            what = f"input device {device!r}" if device is not None else "the default input device"
            raise DeviceError(f"cannot open {what}: {exc}".replace("\n", " ")) from None

    @property
    def dropped_samples(self) -> int:
        return self.queue.dropped_samples

    @property
    def captured_samples(self) -> int:
        return self.queue.received_samples

    @property
    def dropped_seconds(self) -> float:
        return self.queue.dropped_samples / self.sample_rate

    def _callback(self, indata, frames, time_info, status) -> None:
        self.queue.put(indata[:, 0].copy())

    def __enter__(self) -> Microphone:
        try:
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise DeviceError(f"cannot start audio capture: {exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._stream.abort()  # stop() can hang on a source that stopped producing
            finally:
                self._stream.close()
                self.queue.close()

    def read(self, timeout: float = 1.0) -> np.ndarray:
        """All audio captured since the last read (waits up to ``timeout`` for some)."""
        return self.queue.get_all(timeout)


class WavRecorder:
    """Writes float32 mono audio to a WAV file as it arrives (--record), so
    that a live session can be replayed exactly; the header is completed on close."""

    def __init__(self, path, sample_rate: int):
        self.path = path
        self.sample_rate = sample_rate
        self.frames = 0
        try:
            self._f = open(path, "wb")
        except OSError as exc:
            raise AudioError(f"{path}: cannot write recording ({exc.strerror})") from None
        self._f.write(self._header(0))

    def _header(self, frames: int) -> bytes:
        data = frames * 4
        fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + self.sample_rate.to_bytes(4, "little")
        fmt += (self.sample_rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
        return (
            b"RIFF"
            + (36 + data).to_bytes(4, "little")
            + b"WAVE"
            + b"fmt "
            + (16).to_bytes(4, "little")
            + fmt
            + b"data"
            + data.to_bytes(4, "little")
        )

    def write(self, samples: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(samples, dtype="<f4").tobytes())
        self.frames += samples.shape[0]

    def close(self) -> None:
        if not self._f.closed:
            self._f.seek(0)
            self._f.write(self._header(self.frames))
            self._f.close()
