"""Feeding a stream in given chunk sizes: the helper every chunking-invariance
test uses (the sizes repeat until the audio is used up)."""

from __future__ import annotations


def stream_tokens(model, audio, sizes, delay_ms=480, **stream_kw) -> list[int]:
    stream = model.stream(delay_ms, **stream_kw)
    tokens, i, k = [], 0, 0
    while i < len(audio):
        n = sizes[k % len(sizes)]
        tokens += [e.token_id for e in stream.feed(audio[i : i + n])]
        i += n
        k += 1
    tokens += [e.token_id for e in stream.finish() if e.token_id >= 0]
    assert tokens == stream.tokens
    return tokens
