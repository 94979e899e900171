"""OpenAI transcription response bodies from token events: json, text, srt,
vtt, verbose_json (segments and words with times)."""

from __future__ import annotations

import io

from ..formats import SrtWriter, VttWriter
from ..segments import build_segments
from ..stream import TokenEvent

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def _subtitles(writer_cls, events: list[TokenEvent]) -> str:
    buf = io.StringIO()
    writer = writer_cls(buf)
    writer.begin("upload", False)
    for e in events:
        writer.event(e)
    writer.end()
    return buf.getvalue()


def verbose_json(text: str, events: list[TokenEvent], duration: float, language: str | None) -> dict:
    segments = build_segments(events)
    return {
        "task": "transcribe",
        "language": language or "unknown",
        "duration": round(duration, 3),
        "text": text,
        "segments": [
            {
                "id": seg.id,
                "seek": 0,
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "text": seg.text,
                "tokens": seg.tokens,
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for seg in segments
        ],
        "words": [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for seg in segments
            for w in seg.words
        ],
        "usage": {"type": "duration", "seconds": round(duration, 3)},
    }


def render(fmt: str, text: str, events: list[TokenEvent], duration: float, language: str | None):
    """(body, media type): a dict for JSON formats, a string otherwise."""
    if fmt == "json":
        return {"text": text, "usage": {"type": "duration", "seconds": round(duration, 3)}}, "application/json"
    if fmt == "verbose_json":
        return verbose_json(text, events, duration, language), "application/json"
    if fmt == "text":
        return text, "text/plain; charset=utf-8"
    if fmt == "srt":
        return _subtitles(SrtWriter, events), "text/plain; charset=utf-8"
    return _subtitles(VttWriter, events), "text/vtt; charset=utf-8"
