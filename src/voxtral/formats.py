"""Output formats for the CLI, each written incrementally as tokens arrive:
plain text, JSON lines (one object per token), SubRip and WebVTT (one cue per
segment, written when the segment is complete).

Importing this module loads neither numpy nor the C extension (the CLI's
``--help`` needs the format names only)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .events import TokenEvent
    from .segments import Segment


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class Writer:
    """Base: ``begin(source)``, ``event(e)`` per token, ``end()`` per input."""

    def __init__(self, out: TextIO):
        self.out = out

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()

    def begin(self, source: str, multiple: bool) -> None:
        pass

    def event(self, e: TokenEvent) -> None:
        raise NotImplementedError

    def end(self) -> None:
        pass

    def pause(self) -> None:
        """A turn of speech ended (live input with voice activity detection)."""

    def close(self) -> None:
        pass


class TextWriter(Writer):
    def begin(self, source, multiple):
        if multiple:
            self._write(f"==> {source} <==\n")

    def event(self, e):
        self._write(e.text)

    def end(self):
        self._write("\n")

    def pause(self):
        self._write("\n")


class JsonlWriter(Writer):
    def begin(self, source, multiple):
        self.source = source

    def event(self, e):
        if e.token_id < 0 and not e.text:
            return
        row = {
            "source": self.source,
            "token": e.token_id,
            "text": e.text,
            "control": e.control,
            "start": round(e.start, 3),
            "end": round(e.end, 3),
        }
        self._write(json.dumps(row, ensure_ascii=False) + "\n")


class _CueWriter(Writer):
    """Segments as subtitle cues: one document holds one input's timeline
    (the CLI writes several inputs to several files)."""

    def __init__(self, out):
        from .segments import SegmentBuilder

        super().__init__(out)
        self.count = 0
        self.builder = SegmentBuilder()

    def begin(self, source, multiple):
        from .segments import SegmentBuilder

        self.builder = SegmentBuilder()

    def event(self, e):
        for seg in self.builder.push(e):
            self._cue(seg)

    def end(self):
        for seg in self.builder.finish():
            self._cue(seg)

    pause = end  # a pause ends a cue

    def _cue(self, seg: Segment) -> None:
        self.count += 1
        end = max(seg.end, seg.start + 0.001)
        text = " ".join(seg.text.split())  # a cue must not contain blank lines
        self._write(self._format(self.count, seg.start, end, text))


class SrtWriter(_CueWriter):
    def _format(self, n, start, end, text):
        return f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"


class VttWriter(_CueWriter):
    def __init__(self, out):
        super().__init__(out)
        self._write("WEBVTT\n\n")

    def _format(self, n, start, end, text):
        return f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n"


WRITERS = {"text": TextWriter, "jsonl": JsonlWriter, "srt": SrtWriter, "vtt": VttWriter}
# File name extension per format, for --output-dir (whisper's names).
EXTENSIONS = {"text": ".txt", "jsonl": ".jsonl", "srt": ".srt", "vtt": ".vtt"}
