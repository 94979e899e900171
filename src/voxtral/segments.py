"""Words and segments with timestamps, built incrementally from token events
(faster-whisper style: ``Segment(start, end, text, words, tokens)``).

A word starts at a piece that begins with white space; a segment ends after
a word that ends a sentence (. ? ! and their CJK forms) or after a pause of
``pause_tokens`` control tokens (the model's silence/waiting markers)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .events import TokenEvent

_SENTENCE_END = (".", "?", "!", "。", "？", "！")


@dataclass
class Word:
    start: float
    end: float
    word: str


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


class SegmentBuilder:
    def __init__(self, pause_tokens: int = 12):
        self.pause_tokens = pause_tokens
        self._words: list[Word] = []
        self._tokens: list[int] = []
        self._word: Word | None = None
        self._silent_run = 0
        self._next_id = 0

    def _close_word(self) -> None:
        if self._word is not None and self._word.word.strip():
            self._words.append(self._word)
        self._word = None

    def _close_segment(self) -> Segment | None:
        self._close_word()
        if not self._words:
            self._tokens = []
            return None
        words, tokens = self._words, self._tokens
        self._words, self._tokens = [], []
        seg = Segment(
            id=self._next_id,
            start=words[0].start,
            end=words[-1].end,
            text="".join(w.word for w in words).strip(),
            words=words,
            tokens=tokens,
        )
        self._next_id += 1
        return seg

    def push(self, event: TokenEvent) -> list[Segment]:
        """Consume one event; returns the segments it completes."""
        done: list[Segment] = []
        if event.token_id >= 0:
            self._tokens.append(event.token_id)
        if event.text:
            done.extend(self._add_text(event))
        if event.control:
            self._silent_run += 1
            if self._silent_run == self.pause_tokens:
                seg = self._close_segment()
                if seg:
                    done.append(seg)
        elif event.text:
            self._silent_run = 0
        return done

    def _add_text(self, event: TokenEvent) -> list[Segment]:
        done: list[Segment] = []
        text = event.text
        if text[0].isspace() and self._word is not None:
            self._close_word()
            if self._words and self._words[-1].word.rstrip().endswith(_SENTENCE_END):
                seg = self._close_segment()
                if seg:
                    done.append(seg)
        if self._word is None:
            self._word = Word(start=event.start, end=event.end, word=text)
        else:
            self._word.word += text
            self._word.end = event.end
        return done

    def finish(self) -> list[Segment]:
        seg = self._close_segment()
        return [seg] if seg else []


def build_segments(events: Iterable[TokenEvent], pause_tokens: int = 12) -> list[Segment]:
    builder = SegmentBuilder(pause_tokens)
    out: list[Segment] = []
    for e in events:
        out.extend(builder.push(e))
    out.extend(builder.finish())
    return out
