"""Log-mel front end: periodic Hann STFT, Slaney mel bank, log10 with a global
floor (global_log_mel_max - 8), as the model was trained.

The STFT power spectrum and the log-mel projection run in C
(``_kernels.stft_power`` / ``_kernels.log_mel``); this module owns the
framing. ``LogMelStream`` computes each frame exactly once as samples arrive.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _kernels
from .config import AudioConfig


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz, min_log_mel = 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    mel = freq / f_sp
    log_region = freq >= min_log_hz
    mel = np.where(log_region, min_log_mel + np.log(np.maximum(freq, 1e-300) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz, min_log_mel = 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filters(
    n_freq: int, n_mels: int, sampling_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters, float64 [n_freq, n_mels]."""
    if f_max is None:
        f_max = sampling_rate / 2
    mel_points = np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    fft_freqs = np.linspace(0, sampling_rate // 2, n_freq)
    widths = np.diff(hz_points)
    slopes = hz_points[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels])[None, :]
    return filters


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window default), float32."""
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(np.float32)


class MelFrontEnd:
    """Constants of the front end, shared by every stream of one model."""

    def __init__(self, audio: AudioConfig):
        self.cfg = audio
        self.n_fft = audio.window_size
        self.hop = audio.hop_length
        self.window = hann_window(self.n_fft)
        self.filters = np.ascontiguousarray(
            mel_filters(self.n_fft // 2 + 1, audio.num_mel_bins, audio.sampling_rate, 0.0, 8000.0), dtype=np.float32
        )
        self.log_floor = float(audio.global_log_mel_max) - 8.0

    def frames(self, padded: np.ndarray, n_frames: int) -> np.ndarray:
        """Log-mel of frames starting at padded[i*hop], i < n_frames: [n_frames, n_mels]."""
        if n_frames <= 0:
            return np.zeros((0, self.cfg.num_mel_bins), dtype=np.float32)
        power = _kernels.stft_power(np.ascontiguousarray(padded, dtype=np.float32), self.window, self.hop, n_frames)
        return _kernels.log_mel(power, self.filters, self.log_floor)

    def spectrogram(self, audio: np.ndarray) -> np.ndarray:
        """Offline log-mel of a whole signal, as the reference computes it:
        centred frames with reflect padding, last frame dropped. [frames, n_mels]."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        half = self.n_fft // 2
        if audio.shape[0] <= half:
            raise ValueError(f"audio too short for the STFT: {audio.shape[0]} samples")
        padded = np.pad(audio, (half, half), mode="reflect")
        n_frames = 1 + audio.shape[0] // self.hop - 1  # centred STFT frames, minus the dropped last one
        return self.frames(padded, n_frames)


class LogMelStream:
    """Incremental log-mel over a stream that starts with silence.

    The model's stream always begins with the left-pad silence, so the
    reference's reflect padding at the start is zeros; at ``finish`` the
    right pad is silence too, so the same holds at the end. Frame i covers
    samples [i*hop - n_fft/2, i*hop + n_fft/2) and is computed once.
    """

    def __init__(self, front: MelFrontEnd):
        self.front = front
        half = front.n_fft // 2
        self._buf = np.zeros(half, dtype=np.float32)  # starts at stream index -half
        self._buf_origin = -half  # stream index of _buf[0]
        self.next_frame = 0
        self.samples_in = 0

    def _ready_frames(self, end_index: int) -> int:
        # Frame i is ready when its window end i*hop + half <= end_index.
        half, hop = self.front.n_fft // 2, self.front.hop
        return max(0, (end_index - half) // hop + 1 - self.next_frame)

    def _compute(self, n: int) -> np.ndarray:
        hop = self.front.hop
        half = self.front.n_fft // 2
        start = self.next_frame * hop - half - self._buf_origin
        out = self.front.frames(self._buf[start:], n)
        self.next_frame += n
        # Keep only what later frames still need.
        keep_from = self.next_frame * hop - half - self._buf_origin
        self._buf = self._buf[keep_from:].copy()
        self._buf_origin += keep_from
        return out

    def copy(self) -> LogMelStream:
        """An independent copy of this framer's state (the front end is shared: it is read-only)."""
        new = copy.copy(self)
        new._buf = self._buf.copy()
        return new

    @property
    def buffered_samples(self) -> int:
        """Samples held for frames not yet computed (bounded on any stream)."""
        return int(self._buf.shape[0])

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        self._buf = np.concatenate([self._buf, samples])
        self.samples_in += samples.shape[0]
        return self._compute(self._ready_frames(self.samples_in))

    def finish(self) -> np.ndarray:
        """All remaining frames of a stream whose length is a multiple of hop:
        frames i < samples_in / hop (the centred STFT's last frame is dropped)."""
        half = self.front.n_fft // 2
        self._buf = np.concatenate([self._buf, np.zeros(half, dtype=np.float32)])
        total = self.samples_in // self.front.hop
        return self._compute(max(0, total - self.next_frame))
