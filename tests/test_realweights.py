"""End to end with the real weights: runs only when VOXTRAL_MODEL_DIR is set."""

from __future__ import annotations

import os
import re

import pytest

import voxtral

pytestmark = pytest.mark.realweights

MODEL_DIR = os.environ.get("VOXTRAL_MODEL_DIR")


def normalise(text: str) -> list[str]:
    text = text.lower().replace("'em", "them")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_error_rate(ref: list[str], hyp: list[str]) -> float:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))


def test_wer_helper():
    assert word_error_rate("a b c".split(), "a b c".split()) == 0
    assert word_error_rate("a b c d".split(), "a x c".split()) == 0.5


# Every weight format and KV cache type; the quantized modes are approximations
# (published: BF16 4.9 % vs third-party Q4_K 5.4 % English FLEURS WER), so
# they get a little more room. Each run prints its WER (-s shows them).
MODES = [
    (None, "f32", 0.10),
    (None, "int8", 0.12),
    ("q8_0", "f32", 0.10),
    ("q4_k", "int8", 0.15),
    ("q4_0", "int8", 0.15),
]


@pytest.mark.skipif(not MODEL_DIR, reason="set VOXTRAL_MODEL_DIR to a real Voxtral Mini 4B Realtime directory")
@pytest.mark.parametrize("quant,kv_cache,max_wer", MODES)
def test_real_recordings_transcribed(audio_dir, quant, kv_cache, max_wer):
    model = voxtral.load(MODEL_DIR, quant=quant, kv_cache=kv_cache)
    ref_words, errors = 0, 0.0
    for wav in sorted(audio_dir.glob("*.wav")):
        expected = normalise(wav.with_suffix(".txt").read_text())
        got = normalise(model.transcribe(wav).text)
        wer = word_error_rate(expected, got)
        print(f"{quant or 'bf16'}/{kv_cache} {wav.name}: WER {wer:.1%}")
        ref_words += len(expected)
        errors += wer * len(expected)
        assert wer <= max_wer, f"{wav.name}: WER {wer:.1%}: {' '.join(got)!r}"
    print(f"{quant or 'bf16'}/{kv_cache}: overall WER {errors / ref_words:.1%}")
