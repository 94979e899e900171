"""Accuracy of the compact decoder KV caches (bf16, int8) against the exact
fp32 cache, over whole runs on real recordings.

For each recording and mode it reports
- agree: greedy token agreement of free runs (position-wise matches over the
  longer of the two token sequences) and the first position that differs;
- forced: the same model teacher-forced with the fp32 run's tokens, so that
  every step sees the same inputs: top-1 agreement, the max |logit
  difference| and that max relative to the step's fp32 logit range.

Usage: python bench/kvcache_accuracy.py MODEL_DIR [AUDIO_DIR]
(tests/test_stream_kvcache.py runs it, slow-marked, on the ``fullwidth``
random-weight checkpoint: real widths, 2+2 layers.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import voxtral
from voxtral.audio import load_audio
from voxtral.config import DEFAULT_DELAY_MS
from voxtral.stream import Stream

CHUNK = 16000  # 1 s pieces, as a live stream would feed


class _ForcedStream(Stream):
    """Keeps every step's logits but feeds back the given tokens, not its own argmax."""

    def __init__(self, model, forced, **kw):
        super().__init__(model, DEFAULT_DELAY_MS, keep_logits=True, **kw)
        self._forced = list(forced)
        self.own: list[int] = []

    def _emit(self, logits, position):
        event = super()._emit(logits, position)
        self.own.append(self.tokens[-1])
        i = len(self.tokens) - 1
        if i < len(self._forced):  # overwrite the greedy choice with the reference's
            self.tokens[-1] = self._last_token = self._forced[i]
            self.ended_by_eos = self._forced[i] == self.model.tokenizer.eos_id
        return event


def _run(stream, audio):
    for i in range(0, len(audio), CHUNK):
        stream.feed(audio[i : i + CHUNK])
    stream.finish()
    return stream


def measure(model_dir, audio_dir) -> list[dict]:
    model = voxtral.load(model_dir)  # f32 by default; streams override the cache
    rows = []
    for wav in sorted(Path(audio_dir).glob("*.wav")):
        audio = load_audio(wav)
        ref = _run(_ForcedStream(model, [], kv_cache="f32"), audio)
        ref_tokens, ref_logits = ref.tokens, ref.logits
        for mode in ("bf16", "int8"):
            free = _run(model.stream(kv_cache=mode), audio).tokens
            n = max(len(free), len(ref_tokens))
            matches = sum(a == b for a, b in zip(free, ref_tokens))
            first = next((i for i, (a, b) in enumerate(zip(free, ref_tokens)) if a != b), min(len(free), len(ref_tokens)))
            forced = _run(_ForcedStream(model, ref_tokens, kv_cache=mode), audio)
            steps = min(len(forced.logits), len(ref_logits))
            diffs = [float(np.abs(forced.logits[i] - ref_logits[i]).max()) for i in range(steps)]
            rel = [d / float(np.ptp(ref_logits[i])) for i, d in enumerate(diffs)]
            top1 = sum(forced.own[i] == ref_tokens[i] for i in range(steps)) / max(1, steps)
            rows.append(dict(audio=wav.stem, mode=mode, tokens=len(ref_tokens), agree=matches / max(1, n),
                             first_diff=first, forced_top1=top1, max_dlogit=max(diffs), max_rel=max(rel)))
    return rows


def table(rows) -> str:
    head = f"{'audio':<46} {'mode':<5} {'tokens':>6} {'agree':>7} {'1st diff':>8} {'forced top1':>11} " \
           f"{'max|dlogit|':>11} {'/range':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['audio'][:46]:<46} {r['mode']:<5} {r['tokens']:>6} {r['agree']:>7.3f} {r['first_diff']:>8} "
                     f"{r['forced_top1']:>11.3f} {r['max_dlogit']:>11.4f} {r['max_rel']:>8.2e}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    audio = sys.argv[2] if len(sys.argv) > 2 else Path(__file__).resolve().parents[1].parent / "shared/data/audio"
    print(table(measure(sys.argv[1], audio)))
