"""Long recordings: the exact sequential path against ``transcribe(batch_size=N)``
(cut at silences by Silero VAD, segments decoded together, one pass over the
weights per step for all of them), in the same run, as real-time factors
(seconds of compute per second of audio) and their ratio.

    python bench/bench_long_file.py MODEL_DIR [--minutes 10] [--batch-size 8]
        [--sequential-minutes M] [--json FILE]

The recording is speech with pauses: the shared recordings (and, when
present, the trained model's held-out utterances) in turn, each followed by
0.3-2 s of silence, cut to ``--minutes``. ``--sequential-minutes`` times the
sequential path on the first M minutes only (it is the slow one); both RTFs
are per second of the audio each decoded. Says the ISA, the threads and the
model's weight types.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HELDOUT = ROOT / "tests" / "data" / "trained-synth" / "heldout"


def speech_pieces(rate: int) -> list[np.ndarray]:
    from voxtral.audio import load_audio

    paths = sorted((SHARED / "data" / "audio").glob("*.wav")) + sorted(HELDOUT.glob("*.flac"))
    if not paths:
        raise SystemExit(f"no recordings under {SHARED / 'data' / 'audio'} or {HELDOUT}")
    return [load_audio(p, target_rate=rate) for p in paths]


def long_recording(minutes: float, rate: int, seed: int = 0) -> np.ndarray:
    """Speech pieces in turn with 0.3-2 s pauses, exactly ``minutes`` long."""
    rng = np.random.default_rng(seed)
    pieces = speech_pieces(rate)
    total = int(minutes * 60 * rate)
    out, n, i = [], 0, 0
    while n < total:
        gap = np.zeros(int(rng.uniform(0.3, 2.0) * rate), dtype=np.float32)
        for part in (pieces[i % len(pieces)], gap):
            out.append(part)
            n += part.shape[0]
        i += 1
    return np.concatenate(out)[:total]


def timed(fn) -> tuple[float, float, object]:
    """Wall and process CPU seconds of ``fn()``, and its result."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def main(argv=None) -> int:
    import voxtral
    from voxtral import _kernels

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sequential-minutes", type=float, default=None, help="default: the whole recording")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    model = voxtral.load(a.model, download=False)
    rate = model.sample_rate
    audio = long_recording(a.minutes, rate)
    seq_audio = audio[: int((a.sequential_minutes or a.minutes) * 60 * rate)]
    info = {
        "model": str(a.model),
        "isa": _kernels.active_isa(),
        "threads": _kernels.get_num_threads(),
        "audio_minutes": a.minutes,
        "sequential_minutes": seq_audio.shape[0] / rate / 60,
        "batch_size": a.batch_size,
    }
    print(json.dumps(info), flush=True)
    model.transcribe(audio[: rate * 2], sample_rate=rate)  # first-call allocations
    bw, bc, batched = timed(lambda: model.transcribe(audio, sample_rate=rate, batch_size=a.batch_size))
    audio_s = audio.shape[0] / rate
    print(f"batched (N={a.batch_size}): RTF {bw / audio_s:.3f} wall, {bc / audio_s:.3f} CPU", flush=True)
    sw, sc, sequential = timed(lambda: model.transcribe(seq_audio, sample_rate=rate))
    seq_s = seq_audio.shape[0] / rate
    print(f"sequential: RTF {sw / seq_s:.3f} wall, {sc / seq_s:.3f} CPU", flush=True)
    report = {
        **info,
        "rtf_batched": bw / audio_s,
        "rtf_batched_cpu": bc / audio_s,
        "rtf_sequential": sw / seq_s,
        "rtf_sequential_cpu": sc / seq_s,
        "speedup": (sw / seq_s) / (bw / audio_s),
        "transcript_segments_batched": len(batched.segments),
        "words_batched": len(batched.text.split()),
        "words_sequential": len(sequential.text.split()),
    }
    print(f"batched is {report['speedup']:.2f}x the sequential speed", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
