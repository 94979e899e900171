"""Drafted verification: decoder passes per second of audio, steps accepted
per pass and wall time, for draft_steps K (1 = step by step) on the shared
recordings and on a half-silent one (the first recording followed by as much
silence), offline; and the live real-time factor (80 ms chunks on a
synthetic real-time clock, the backlog taken at once as the microphone loop
does, see livesim.py). Token ids are checked equal to K = 1 for every run.

    python bench/bench_drafts.py MODEL_DIR [--k 1,4,8,16] [--live-seconds 6]

Random weights rarely emit pads (a trained model: ~70% of steps): make a
checkpoint with ``--pad-gain`` (python -m voxtral.testing.checkpoint) for
speech-like figures, and say which was used. K values alternate within one
run (A/B on the same machine state).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHUNK_S = 0.08


def recordings() -> dict[str, np.ndarray]:
    from voxtral.audio import load_audio

    out = {p.stem: load_audio(p) for p in sorted((SHARED / "data" / "audio").glob("*.wav"))}
    first = next(iter(out.values()))
    out["half_silent"] = np.concatenate([first, np.zeros_like(first)])
    return out


def offline(model, audio: np.ndarray, k: int) -> dict:
    stream = model.stream(draft_steps=k)
    t = time.perf_counter()
    stream.feed(audio)
    stream.finish()
    seconds = time.perf_counter() - t
    audio_s = len(audio) / model.sample_rate
    pads = sum(i == model.tokenizer.streaming_pad_id for i in stream.tokens) / max(1, len(stream.tokens))
    return {
        "k": k,
        "tokens": stream.tokens,
        "passes": stream.passes,
        "passes_per_audio_s": stream.passes / audio_s,
        "steps_per_pass": len(stream.tokens) / max(1, stream.passes),
        "rtf": seconds / audio_s,
        "pad_share": pads,
        "drafts_accepted": sum(d.accepted for d in stream.drafter.stats.values())
        / max(1, sum(d.drafted for d in stream.drafter.stats.values())),
    }


def live(model, audio: np.ndarray, k: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from livesim import paced_feed

    stream = model.stream(draft_steps=k)
    chunk = int(CHUNK_S * model.sample_rate)
    stream.feed(audio[:chunk])  # first-call allocations
    passes0, tokens0 = stream.passes, len(stream.tokens)
    run = paced_feed(stream, audio[chunk:], chunk, model.sample_rate)
    passes, steps = stream.passes - passes0, len(stream.tokens) - tokens0
    return {"k": k, "rtf": run.rtf, **run.percentiles(), "steps_per_pass": steps / max(1, passes)}


def main(argv=None) -> int:
    import voxtral

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--k", default="1,8", help="draft_steps values, comma-separated (default 1,8)")
    p.add_argument("--live-seconds", type=float, default=6.0, help="seconds of live audio (0: no live run)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    ks = [int(x) for x in a.k.split(",")]
    model = voxtral.load(a.model, download=False)
    report: dict = {"model": str(a.model), "offline": [], "live": []}
    for name, audio in recordings().items():
        rows = {}
        for _ in range(a.rounds):
            for k in ks:
                r = offline(model, audio, k)
                best = rows.get(k)
                if best is None or r["rtf"] < best["rtf"]:
                    rows[k] = r
        exact = rows[ks[0]]["tokens"]
        for k in ks:
            r = rows[k]
            assert r["tokens"] == exact, f"{name}: K={k} tokens differ from K={ks[0]}"
            del r["tokens"]
            report["offline"].append({"audio": name, **r})
            print(
                f"{name:45s} K={k:2d}  passes/s audio {r['passes_per_audio_s']:5.2f}  steps/pass "
                f"{r['steps_per_pass']:4.2f}  pads {r['pad_share']:4.0%}  drafts accepted "
                f"{r['drafts_accepted']:4.0%}  RTF {r['rtf']:.3f}",
                flush=True,
            )
    if a.live_seconds > 0:
        audio = np.concatenate(list(recordings().values()))[: int(a.live_seconds * model.sample_rate)]
        for _ in range(a.rounds):
            for k in ks:
                r = live(model, audio, k)
                report["live"].append(r)
                print(
                    f"live K={k:2d}  RTF {r['rtf']:.3f}  p50 {r['p50_ms']:.0f} ms  p95 {r['p95_ms']:.0f} ms  "
                    f"steps/pass {r['steps_per_pass']:.2f}",
                    flush=True,
                )
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
