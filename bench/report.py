"""One command for the speed report: a markdown table and a PNG plot.

    python bench/report.py [--out bench/results] [--formats bf16 q8_0 q4_0 q4_k] [--kv f32 int8]

On the full-size random checkpoint (generated once, quantized once per
format), it measures in one run:
- the roofline: read-only memory bandwidth with all threads, before and
  after the model runs (a shared machine's bandwidth moves);
- per quantized format, the weights as the GGUF holds them (GGML layout,
  VOXTRAL_REPACK=0) and repacked at load (the default), interleaved in one
  run, with the kernel table each ran and the process RSS once loaded;
- per weight format and KV cache type: the decoder step (26 layers + LM
  head, one token) at several context lengths, its weight bytes per token
  and, at the shortest context, the achieved weight bandwidth as a ratio to
  the roofline;
- the encoder: one live push (80 ms of audio) after a full 15 s window, and
  offline seconds per second of audio;
- llama.cpp side by side (when llama-cpp-python is installed, see
  anchor_llama.py; ``--no-anchor`` skips it): per weight type, its ms per
  decoded token on a GGUF of the same decoder shapes and recipe, same
  threads, at the short context and at ~4000 positions, and our ratio to it.
Writes report.md, report.json and decoder_step_vs_context.png to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchor_llama
from livesim import fill_cache

import voxtral
from conftest import SHARED, measure_read_bandwidth
from voxtral import _kernels
from voxtral.audio import load_audio
from voxtral.decoder import DecoderRows
from voxtral.mel import LogMelStream
from voxtral.weights import LINEAR_FIELDS

CONTEXTS = [64, 1024, 2048, 4096, 8191]


def rss_bytes() -> int:
    """Resident set size of this process (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def load_with_layout(model_dir, fmt: str, kv: str, layout: str):
    """The model with its quantized weights in ``layout`` ("packed" or "ggml")."""
    import os

    before = os.environ.get("VOXTRAL_REPACK")
    os.environ["VOXTRAL_REPACK"] = "0" if layout == "ggml" else "1"
    try:
        return voxtral.load(model_dir, quant=None if fmt == "bf16" else fmt, kv_cache=kv)
    finally:
        if before is None:
            del os.environ["VOXTRAL_REPACK"]
        else:
            os.environ["VOXTRAL_REPACK"] = before


def decoder_weight_bytes(model) -> int:
    w = model.weights
    per_layer = sum(getattr(lw, n).nbytes for lw in w.decoder_layers for n in LINEAR_FIELDS)
    return int(per_layer + w.tok_embeddings.nbytes)


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def decoder_step_ms(model, contexts: list[int], reps: int = 5) -> dict[int, float]:
    dec = model.decoder
    cache = dec.new_cache(model.kv_cache)  # the mode's KV storage (the row's label)
    ada = dec.ada_scales(6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, model.config.decoder.dim)).astype(np.float32)
    dec.forward([DecoderRows(cache, x, ada)])  # one real row to repeat
    out = {}
    for T in contexts:
        fill_cache(cache, T)
        out[T] = 1000 * best_of(lambda: dec.logits(dec.forward([DecoderRows(cache, x, ada)])), reps)
    return out


def encoder_times(model, audio: np.ndarray) -> dict[str, float]:
    rate = model.sample_rate
    enc = model.encoder
    state = enc.new_state(model.kv_cache)
    mel = LogMelStream(model.front)
    warm = int(15.04 * rate)
    t = time.perf_counter()
    enc.push(state, mel.push(audio[:warm]))
    offline_s_per_s = (time.perf_counter() - t) / (warm / rate)
    chunk = int(0.08 * rate)
    pushes = []
    for start in range(warm, min(len(audio), warm + 20 * chunk), chunk):
        frames = mel.push(audio[start : start + chunk])
        t = time.perf_counter()
        enc.push(state, frames)
        pushes.append(time.perf_counter() - t)
    return {
        "offline_s_per_audio_s": offline_s_per_s,
        "live_push_ms_median": 1000 * float(np.median(pushes)),
        "live_push_ms_min": 1000 * float(np.min(pushes)),
    }


def anchor_times(model, fmt: str, py) -> dict:
    """llama.cpp's min ms per token on the same shapes / type / threads at the
    short context and ~ANCHOR_LONG, with ours at exactly its positions."""
    path, _ = anchor_llama.ensure_gguf(fmt, py)
    threads = _kernels.get_num_threads()
    out = {}
    for label, ctx in (("short", CONTEXTS[0]), ("long", anchor_llama.LONG)):
        if not ctx:
            continue
        theirs = anchor_llama.llama_decode_ms(py, path, threads, ctx)
        ours = decoder_step_ms(model, [theirs["ctx"]])[theirs["ctx"]]
        out[label] = {
            "ctx": theirs["ctx"],
            "llama_ms": min(theirs["ms"]),
            "ours_ms": ours,
            "llama_median_ms": float(np.median(theirs["ms"])),
        }
        out["llama_version"], out["llama_isa"] = theirs["version"], anchor_llama.cpu_flags_line(theirs["system"])
    return out


def anchor_markdown(results: list[dict], skipped: str | None) -> str:
    if skipped:
        return f"\nllama.cpp side by side: skipped ({skipped}).\n"
    rows = [r for r in results if "anchor" in r]
    if not rows:
        return ""
    a0 = rows[0]["anchor"]
    lines = [
        "",
        (
            f"llama.cpp side by side (llama-cpp-python {a0['llama_version']}, built with {a0['llama_isa']}; "
            "same decoder shapes, weight type and threads; its KV cache F16; ours / llama.cpp < 1: we are faster):"
        ),
        "",
        (
            "| mode | positions | ours ms/token | llama.cpp ms/token (min / median) | ratio "
            "| positions | ours | llama.cpp | ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for label in ("short", "long"):
            a = r["anchor"].get(label)
            if a is None:
                cells.append("- | - | - | -")
                continue
            cells.append(
                f"{a['ctx']} | {a['ours_ms']:.1f} | {a['llama_ms']:.1f} / {a['llama_median_ms']:.1f} "
                f"| {a['ours_ms'] / a['llama_ms']:.2f}"
            )
        lines.append(f"| {r['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        xs = sorted(int(k) for k in r["step_ms"])
        ax.plot(xs, [r["step_ms"][k] for k in xs], marker="o", label=r["mode"])
    ax.axhline(80, color="gray", linestyle="--", linewidth=1)
    ax.text(xs[0], 82, "real time: 80 ms per token (whole pipeline)", color="gray", fontsize=8)
    ax.set_xlabel("decoder context (cached positions)")
    ax.set_ylabel("ms per token (decoder step + LM head)")
    ax.set_title(f"Decoder step, full-size model, {_kernels.get_num_threads()} threads, {_kernels.active_isa()}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: list[dict], bw: float, meta: dict) -> str:
    lines = [
        (
            f"Machine: {meta['cpu']}, {meta['threads']} threads, ISA {meta['isa']}; "
            f"read bandwidth (roofline) {bw / 1e9:.1f} GB/s (before {meta['read_bandwidth_before'] / 1e9:.1f}, "
            f"after {meta['read_bandwidth_after'] / 1e9:.1f})."
        ),
        "",
        "| mode | kernels | RSS loaded | weights read per token | "
        + " | ".join(f"ms/token @ {c}" for c in CONTEXTS)
        + " | weight GB/s @ short | ratio to roofline | encoder live push (ms) | encoder offline (s per audio s) |",
        "|---|---|---|---|" + "---|" * len(CONTEXTS) + "---|---|---|---|",
    ]
    for r in results:
        short = r["step_ms"][CONTEXTS[0]]
        gbs = r["weight_bytes"] / (short / 1000) / 1e9
        lines.append(
            f"| {r['mode']} | {r['kernels']} | {r['rss_bytes'] / 1e9:.2f} GB | {r['weight_bytes'] / 1e9:.2f} GB | "
            + " | ".join(f"{r['step_ms'][c]:.1f}" for c in CONTEXTS)
            + f" | {gbs:.1f} | {gbs * 1e9 / bw:.2f} | {r['encoder']['live_push_ms_median']:.1f} "
            f"| {r['encoder']['offline_s_per_audio_s']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from bench_model import _bench_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--formats", nargs="*", default=["bf16", "q8_0", "q4_0", "q4_k"])
    ap.add_argument("--kv", nargs="*", default=["f32", "int8"])
    ap.add_argument(
        "--layouts", nargs="*", default=["packed", "ggml"], help="quantized weights repacked or as in the file"
    )
    ap.add_argument("--model", type=Path, default=None, help="full-size BF16 checkpoint (default: the bench's)")
    ap.add_argument("--no-anchor", action="store_true", help="skip the llama.cpp side-by-side")
    a = ap.parse_args(argv)
    llama_py = None if a.no_anchor else anchor_llama.llama_python()
    anchor_skipped = "--no-anchor" if a.no_anchor else (None if llama_py else anchor_llama.why_missing())
    model_dir = a.model or _bench_dir()
    if not (model_dir / "consolidated.safetensors").is_file():
        from voxtral.testing.checkpoint import make_checkpoint

        make_checkpoint(model_dir, preset="full", layout="native", seed=0)
    a.out.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate([load_audio(p) for p in sorted((SHARED / "data" / "audio").glob("*.wav"))])
    bw_before = measure_read_bandwidth()
    results = []
    for fmt in a.formats:
        for kv in a.kv:
            for layout in a.layouts if fmt in _kernels.repacked_qtypes() else a.layouts[:1]:
                model = load_with_layout(model_dir, fmt, kv, layout)
                packed = fmt in _kernels.repacked_qtypes() and model.weights.decoder_layers[0].wq.packed is not None
                kernels = (
                    f"{_kernels.qp_kernels()} repacked"
                    if packed
                    else (_kernels.q_kernels() if fmt != "bf16" else _kernels.active_isa())
                )
                mode = f"{fmt} weights, {kv} KV" + (", repacked" if packed else "")
                print(mode, file=sys.stderr, flush=True)
                decoder_step_ms(model, CONTEXTS[:1], reps=2)  # warm-up: page the weights in
                results.append(
                    {
                        "mode": mode,
                        "weights": fmt,
                        "kv_cache": kv,
                        "kernels": kernels,
                        "rss_bytes": rss_bytes(),
                        "weight_bytes": decoder_weight_bytes(model),
                        "step_ms": decoder_step_ms(model, CONTEXTS),
                        "encoder": encoder_times(model, audio),
                    }
                )
                if llama_py is not None and kv == a.kv[-1] and layout == a.layouts[0]:  # once per weight type
                    results[-1]["anchor"] = anchor_times(model, fmt, llama_py)
                del model
                gc.collect()
    bw_after = measure_read_bandwidth()
    bw = max(bw_before, bw_after)
    import platform

    meta = {
        "cpu": platform.processor() or platform.machine(),
        "threads": _kernels.get_num_threads(),
        "isa": _kernels.active_isa(),
        "read_bandwidth": bw,
        "read_bandwidth_before": bw_before,
        "read_bandwidth_after": bw_after,
    }
    try:
        meta["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    text = markdown(results, bw, meta)
    text += anchor_markdown(results, anchor_skipped)
    (a.out / "report.md").write_text(text)
    (a.out / "report.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    try:
        plot(results, a.out / "decoder_step_vs_context.png")
    except ImportError:  # the tables above are the report; the picture is extra
        print("report: matplotlib is not installed, no plot (pip install matplotlib)", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
