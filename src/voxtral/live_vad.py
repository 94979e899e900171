"""Always-on live input that costs CPU only while someone speaks (``--mic --vad``).

``SpeechGate`` sits between live audio and a ``Stream``: the voice activity
detector decides what is speech; speech (from its prefix padding on) is fed
to the stream, at the detector's stop the stream is flushed (its delay emptied,
so the last words come out at the pause), and silence is not decoded at all.
The stream then transcribes exactly the speech with a flush's silence after
each turn, and token times are mapped back to the input's clock.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .events import TokenEvent
from .vad import FRAME_SAMPLES, VadOptions, VoiceActivityDetector

PAUSE = None  # in the output of SpeechGate.feed: a turn of speech ended here


class SpeechGate:
    def __init__(self, stream, options: VadOptions | None = None):
        self.stream = stream
        self.vad = VoiceActivityDetector(options)
        self.rate = stream.config.audio.sampling_rate
        self.pos = 0  # input samples seen
        self.buffer = np.zeros(0, dtype=np.float32)  # input not yet fed, ending at pos
        self.speaking = False
        self.decoded_samples = 0  # input samples given to the stream
        self._map: list[tuple[int, int]] = [(0, 0)]  # (stream sample, input sample) where a turn starts

    def feed(self, chunk: np.ndarray) -> list[TokenEvent | None]:
        """Token events (times on the input's clock) and ``PAUSE`` where a turn ended."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.pos += chunk.shape[0]
        self.buffer = np.concatenate([self.buffer, chunk])
        out: list[TokenEvent | None] = []
        for f in self.vad.feed(chunk):
            if f.event == "speech_started":
                start = max(f.event_sample, self.pos - self.buffer.shape[0])
                self.buffer = self.buffer[self.buffer.shape[0] - (self.pos - start) :]
                self._map.append((self.stream.samples_in, start))
                self.speaking = True
            elif f.event == "speech_stopped":
                out += self._decode(self._take(f.event_sample))
                out += self._events(self.stream.flush())
                out.append(PAUSE)
                self.speaking = False
        if self.speaking:
            out += self._decode(self._take(self.pos))
        else:  # what a speech start may reach back to: the padding and a partial VAD frame
            self.buffer = self.buffer[-(self.vad.options.prefix_samples + 2 * FRAME_SAMPLES) :]
        return out

    def finish(self) -> list[TokenEvent | None]:
        """End of input: the rest of a turn in progress, and the stream's end."""
        out = self._decode(self._take(self.pos)) if self.speaking else []
        return out + self._events(self.stream.finish())

    def _take(self, end: int) -> np.ndarray:
        n = max(0, end - (self.pos - self.buffer.shape[0]))
        piece, self.buffer = self.buffer[:n], self.buffer[n:]
        return piece

    def _decode(self, samples: np.ndarray) -> list[TokenEvent]:
        if not samples.shape[0]:
            return []
        self.decoded_samples += samples.shape[0]
        return self._events(self.stream.feed(samples))

    def _events(self, events: list[TokenEvent]) -> list[TokenEvent]:
        return [dataclasses.replace(e, start=self._input_time(e.start), end=self._input_time(e.end)) for e in events]

    def _input_time(self, seconds: float) -> float:
        """Stream time -> input time: from the last turn that starts at or before it."""
        s = seconds * self.rate
        stream_start, input_start = next((m for m in reversed(self._map) if m[0] <= s), self._map[0])
        return (input_start + s - stream_start) / self.rate
