"""What the engine emits: one ``TokenEvent`` per decoded token.

Kept apart from the engine so that output formats, segments and the CLI can
name it without importing numpy or the C extension."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenEvent:
    """One decoded token. ``text`` is the text it completes ('' for control
    tokens or an unfinished UTF-8 character). ``start``/``end`` are seconds of
    the input audio that the token describes: its 80 ms slot, the delay taken
    off (the token at decoder position p has seen audio up to slot
    p - left_pad - 1 and describes slot p - left_pad - 1 - delay).
    ``token_id`` -1 marks a text-only event (the tail of a UTF-8 character)."""

    token_id: int
    text: str
    position: int
    start: float
    end: float
    control: bool = False
