"""Word error rate of every mode (weights x KV cache x delay) on the held-out
synthetic set that ships with the trained checkpoint
(``tests/data/trained-synth``: ``model/`` and ``heldout/``).

Command line (prints a Markdown table, optionally writes JSON)::

    python -m voxtral.testing.wer MODEL_DIR HELDOUT_DIR [--quant bf16 q8_0 q4_k q4_0]
        [--kv-cache f32 bf16 int8] [--delays 240 480 960] [--limit N] [--json OUT]

``bf16`` is the exact mode (the BF16 checkpoint as it is); the others quantize
it once into the model directory's cache (``voxtral.load(quant=...)``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXACT = "bf16"


def load_heldout(heldout: Path, limit: int | None = None) -> list[dict]:
    """The manifest entries (file, text, words, starts, ends, voice), with ``path`` and ``samples`` added."""
    import soundfile as sf

    manifest = json.loads((heldout / "manifest.json").read_text(encoding="utf-8"))[:limit]
    for m in manifest:
        m["path"] = heldout / m["file"]
        m["samples"] = sf.read(m["path"], dtype="float32")[0]
    return manifest


def normalize(text: str) -> str:
    """Lower case, letters and apostrophes only: the held-out references' form."""
    out = "".join(c if c.isalpha() or c == "'" else " " for c in text.lower())
    return " ".join(w.strip("'") for w in out.split() if w.strip("'"))


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (%) by jiwer, over normalized texts."""
    import jiwer

    return 100.0 * jiwer.wer([normalize(r) for r in references], [normalize(h) or "<empty>" for h in hypotheses])


def mode_wer(model, utterances: list[dict], delay_ms: int) -> tuple[float, list[str]]:
    hyps = [model.transcribe(u["samples"], sample_rate=16000, delay_ms=delay_ms).text for u in utterances]
    return wer([u["text"] for u in utterances], hyps), hyps


def table(
    model_dir: Path,
    heldout: Path,
    quants: list[str],
    kv_caches: list[str],
    delays: list[int],
    limit: int | None = None,
    num_threads: int | None = None,
    log=None,
) -> dict:
    """{"quant/kv/delay": WER %} for every combination."""
    import voxtral

    utts = load_heldout(heldout, limit)
    out: dict[str, float] = {}
    for q in quants:
        for kv in kv_caches:
            model = voxtral.load(model_dir, quant=None if q == EXACT else q, kv_cache=kv, num_threads=num_threads)
            for d in delays:
                t0 = time.perf_counter()
                out[f"{q}/{kv}/{d}"] = mode_wer(model, utts, d)[0]
                if log:
                    log(
                        f"{q:5s} kv={kv:4s} {d:4d} ms: WER {out[f'{q}/{kv}/{d}']:6.2f}% "
                        f"({time.perf_counter() - t0:.0f}s)"
                    )
    return out


def markdown(result: dict, quants: list[str], kv_caches: list[str], delays: list[int]) -> str:
    head = "| weights | KV cache | " + " | ".join(f"{d} ms" for d in delays) + " |"
    lines = [head, "|" + " --- |" * (2 + len(delays))]
    for q in quants:
        for kv in kv_caches:
            cells = " | ".join(f"{result[f'{q}/{kv}/{d}']:.1f}" for d in delays)
            lines.append(f"| {q}{' (exact)' if q == EXACT and kv == 'f32' else ''} | {kv} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m voxtral.testing.wer", description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("heldout", type=Path)
    ap.add_argument("--quant", nargs="+", default=[EXACT, "q8_0", "q4_k", "q4_0"])
    ap.add_argument("--kv-cache", nargs="+", default=["f32", "bf16", "int8"])
    ap.add_argument("--delays", nargs="+", type=int, default=[240, 480, 960])
    ap.add_argument("--limit", type=int, default=None, help="first N held-out utterances only")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    res = table(
        a.model_dir,
        a.heldout,
        a.quant,
        a.kv_cache,
        a.delays,
        a.limit,
        a.threads,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(markdown(res, a.quant, a.kv_cache, a.delays))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
