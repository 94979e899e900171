"""Feeding a stream in given chunk sizes: the helper every chunking-invariance
test uses (the sizes repeat until the audio is used up); and the small
checkpoint of the mode tests in every weight format."""

from __future__ import annotations

from pathlib import Path


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


def mode_dirs(root: Path, **overrides) -> dict[str, Path]:
    """A tiny checkpoint whose rows are all multiples of 256 (q4_k's super-block)
    and its q8_0/q4_0/q4_k copies: {"bf16": dir, "q8_0": dir, ...}."""
    from voxtral import quantize
    from voxtral.testing.checkpoint import make_checkpoint

    src = make_checkpoint(
        root / "bf16",
        preset="tiny",
        layout="native",
        dim=256,
        head_dim=64,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=512,
        enc_dim=256,
        enc_head_dim=64,
        enc_n_heads=4,
        enc_hidden_dim=256,
        **overrides,
    )["native"]
    dirs = {"bf16": src}
    for qt in ("q8_0", "q4_0", "q4_k"):
        assert quantize.main([str(src), str(root / qt), "--type", qt, "--quiet"]) == 0
        dirs[qt] = root / qt
    return dirs
