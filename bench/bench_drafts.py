"""Drafted verification: per draft policy (draft_steps K and draft sources,
drafts.py), decoder passes per second of audio, rows computed per emitted
step, each source's acceptance, and wall/CPU time per audio second against
K = 1, offline; and the live real-time factor (80 ms chunks on a synthetic
real-time clock, the backlog taken at once as the microphone loop does, see
livesim.py). Token ids are checked equal to K = 1 for every run. Policies
alternate within one run, audio by audio (A/B on the same machine state).

    python bench/bench_drafts.py MODEL_DIR [--policies "1/pad 8/pad 8/energy,pad"] [--heldout] [--live-seconds 6]
    python bench/bench_drafts.py MODEL_DIR --energy     # the energy source's rule, measured (drafts.py)
    pytest bench/bench_drafts.py                        # the trained model, BF16 and q4_0, + random weights

The trained small model (tests/data/trained-synth) emits pads at a speech-
like rate; random weights rarely do (a lower bound; ``--pad-gain`` checkpoints
of python -m voxtral.testing.checkpoint are speech-like by construction).
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
TRAINED = ROOT / "tests" / "data" / "trained-synth"
CHUNK_S = 0.08
POLICIES = "1/pad 8/pad 8/energy,pad 8/word,energy,pad 16/energy,pad 32/energy,pad 32/energy"


def recordings() -> dict[str, np.ndarray]:
    """The shared recordings and a half-silent one (the first followed by as much silence)."""
    from voxtral.audio import load_audio

    out = {p.stem: load_audio(p) for p in sorted((SHARED / "data" / "audio").glob("*.wav"))}
    first = next(iter(out.values()))
    out["half_silent"] = np.concatenate([first, np.zeros_like(first)])
    return out


def heldout() -> dict[str, np.ndarray]:
    """The trained model's held-out synthetic utterances."""
    from voxtral.audio import load_audio

    return {p.stem: load_audio(p) for p in sorted((TRAINED / "heldout").glob("*.flac"))}


def parse_policies(text: str) -> list[tuple[int, str]]:
    out = []
    for item in text.split():
        k, _, drafts = item.partition("/")
        out.append((int(k), drafts or "pad"))
    return out


def offline(model, audio: np.ndarray, k: int, drafts: str) -> dict:
    """One offline transcription; its counts, time and per-source statistics."""
    stream = model.stream(draft_steps=k, drafts=drafts)
    rows0 = model.engine.rows
    t, c = time.perf_counter(), time.process_time()
    stream.feed(audio)
    stream.finish()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "tokens": stream.tokens,
        "audio_s": len(audio) / model.sample_rate,
        "passes": stream.passes,
        "rows": model.engine.rows - rows0 - (len(stream.prompt) - 1),  # the prompt's rows: the same for every K
        "wall_s": wall,
        "cpu_s": cpu,
        "pads": sum(i == model.tokenizer.streaming_pad_id for i in stream.tokens),
        "sources": {n: (d.drafted, d.accepted) for n, d in stream.drafter.stats.items()},
    }


def run_policies(model, audios: dict[str, np.ndarray], policies: list[tuple[int, str]], rounds: int = 1) -> dict:
    """Every policy on every audio, alternating (audio by audio, round by round);
    the token ids checked equal to the first policy's; totals per policy."""
    totals: dict[tuple[int, str], dict] = {}
    for name, audio in audios.items():
        exact = None
        for _ in range(rounds):
            for policy in policies:
                r = offline(model, audio, *policy)
                if exact is None:
                    exact = r["tokens"]
                assert r["tokens"] == exact, f"{name}: {policy} tokens differ from {policies[0]}"
                t = totals.setdefault(policy, {"runs": 0, "sources": {}})
                t["runs"] += 1
                for key in ("audio_s", "passes", "rows", "wall_s", "cpu_s", "pads"):
                    t[key] = t.get(key, 0) + r[key]
                t["steps"] = t.get("steps", 0) + len(r["tokens"])
                for src, (d, a) in r["sources"].items():
                    s = t["sources"].setdefault(src, [0, 0])
                    s[0] += d
                    s[1] += a
    base = totals[policies[0]]
    out = {}
    for (k, drafts), t in totals.items():
        out[f"{k}/{drafts}"] = {
            "passes_per_audio_s": t["passes"] / t["audio_s"],
            "steps_per_pass": t["steps"] / t["passes"],
            "rows_per_step": t["rows"] / t["steps"],
            "pad_share": t["pads"] / t["steps"],
            "wall_per_audio_s": t["wall_s"] / t["audio_s"],
            "cpu_per_audio_s": t["cpu_s"] / t["audio_s"],
            "wall_vs_first": t["wall_s"] / base["wall_s"],
            "cpu_vs_first": t["cpu_s"] / base["cpu_s"],
            "sources": {
                src: {
                    "drafted": d,
                    "accepted": a,
                    "wasted": d - a,
                    "acceptance": a / d if d else 0.0,
                    "accepted_per_pass": a / t["passes"],
                }
                for src, (d, a) in t["sources"].items()
            },
        }
    return out


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}")
    print(
        f"{'policy':22s} {'pass/s':>7s} {'step/pass':>9s} {'rows/step':>9s} {'wall/s':>7s} {'cpu/s':>7s} "
        f"{'wall/K1':>7s} {'cpu/K1':>7s}  sources (accepted/drafted, accepted per pass)"
    )
    for policy, r in table.items():
        src = "  ".join(
            f"{n} {s['accepted']}/{s['drafted']} ({s['acceptance']:.0%}, {s['accepted_per_pass']:.2f}/pass)"
            for n, s in r["sources"].items()
            if s["drafted"]
        )
        print(
            f"{policy:22s} {r['passes_per_audio_s']:7.2f} {r['steps_per_pass']:9.2f} {r['rows_per_step']:9.2f} "
            f"{r['wall_per_audio_s']:7.4f} {r['cpu_per_audio_s']:7.4f} {r['wall_vs_first']:7.2f} "
            f"{r['cpu_vs_first']:7.2f}  {src}",
            flush=True,
        )


def energy_rule(model, audios: dict[str, np.ndarray], delays=(160, 480, 960)) -> dict:
    """How the energy source's rule (drafts.py) fares against the model's own
    greedy tokens: non-pad tokens it would call pads (rejections), and pads
    it covers, for the quiet and the no-onset parts of the rule."""
    from voxtral.drafts import EnergyDrafts

    pad = model.tokenizer.streaming_pad_id
    out = {}
    for delay in delays:
        wrong = covered = pads = tokens = 0
        for audio in audios.values():
            stream = model.stream(delay_ms=delay, draft_steps=1)
            stream.feed(audio)
            stream.finish()
            src = EnergyDrafts(pad, model.config.n_left_pad_tokens, stream.samples_per_token, stream.n_delay)
            src.audio(audio)
            src.audio(np.zeros(stream.samples_per_token * (stream.n_delay + 16), dtype=np.float32))
            first = len(stream.prompt)  # the position of the first token
            for i, t in enumerate(stream.tokens):
                said = src.pad(first + i)
                tokens += 1
                pads += t == pad
                wrong += said and t != pad
                covered += said and t == pad
        out[delay] = {"tokens": tokens, "pads": pads, "non_pad_called_pad": wrong, "pads_covered": covered}
        print(f"delay {delay} ms: {out[delay]}", flush=True)
    return out


def live(model, audio: np.ndarray, k: int, drafts: str) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from livesim import paced_feed

    stream = model.stream(draft_steps=k, drafts=drafts)
    chunk = int(CHUNK_S * model.sample_rate)
    stream.feed(audio[:chunk])  # first-call allocations
    passes0, tokens0 = stream.passes, len(stream.tokens)
    run = paced_feed(stream, audio[chunk:], chunk, model.sample_rate)
    passes, steps = stream.passes - passes0, len(stream.tokens) - tokens0
    return {"policy": f"{k}/{drafts}", "rtf": run.rtf, **run.percentiles(), "steps_per_pass": steps / max(1, passes)}


# ---- pytest-benchmark: the trained model (BF16, q4_0) and random weights ----


def _quantized(tmp_path_factory, src: Path, qtype: str) -> Path:
    from voxtral import quantize

    out = tmp_path_factory.mktemp(f"drafts_{qtype}") / qtype
    assert quantize.main([str(src), str(out), "--type", qtype, "--quiet"]) == 0
    return out


def _bench(benchmark, model, audios, label: str) -> dict:
    policies = parse_policies(POLICIES)
    table = run_policies(model, audios, policies)
    print_table(label, table)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update({"policies": table, "machine": "shared; policies alternate audio by audio"})
    return table


def test_drafts_trained_bf16(benchmark):
    import voxtral

    model = voxtral.load(TRAINED / "model")
    audios = {**heldout(), **recordings()}
    table = _bench(benchmark, model, audios, "trained model, BF16, held-out + shared recordings")
    assert table["8/pad"]["passes_per_audio_s"] < table["1/pad"]["passes_per_audio_s"]


def test_drafts_trained_q4_0(benchmark, tmp_path_factory):
    import voxtral

    model = voxtral.load(_quantized(tmp_path_factory, TRAINED / "model", "q4_0"))
    _bench(benchmark, model, {**heldout(), **recordings()}, "trained model, q4_0, held-out + shared recordings")


def test_drafts_random_weights(benchmark, tmp_path_factory):
    """The lower bound: a random small checkpoint (few pads)."""
    import voxtral
    from voxtral.testing.checkpoint import make_checkpoint

    src = make_checkpoint(tmp_path_factory.mktemp("drafts_random"), preset="tiny", layout="native")["native"]
    _bench(benchmark, voxtral.load(src), recordings(), "random weights (tiny preset), shared recordings")


def main(argv=None) -> int:
    import voxtral
    from voxtral.modes import KV_DTYPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--policies", default=POLICIES, help=f"K/sources, space-separated (default {POLICIES!r})")
    p.add_argument("--heldout", action="store_true", help="the trained model's held-out utterances too")
    p.add_argument("--energy", action="store_true", help="measure the energy source's rule on the held-out speech")
    p.add_argument("--live-seconds", type=float, default=0.0, help="seconds of live audio (0: no live run)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--kv", default="f32", choices=KV_DTYPES, help="KV cache storage (default f32, exact)")
    a = p.parse_args(argv)
    model = voxtral.load(a.model, download=False, kv_cache=a.kv)
    report: dict = {"model": str(a.model), "kv_cache": a.kv}
    if a.energy:
        report["energy_rule"] = energy_rule(model, dict(list(heldout().items())[:20]))
    else:
        policies = parse_policies(a.policies)
        if a.heldout:
            report["heldout"] = run_policies(model, heldout(), policies, a.rounds)
            print_table(f"{a.model}: held-out utterances", report["heldout"])
        report["recordings"] = run_policies(model, recordings(), policies, a.rounds)
        print_table(f"{a.model}: shared recordings + half-silent", report["recordings"])
        if a.live_seconds > 0:
            audio = np.concatenate(list(recordings().values()))[: int(a.live_seconds * model.sample_rate)]
            report["live"] = [live(model, audio, *policy) for _ in range(a.rounds) for policy in policies]
            for r in report["live"]:
                print(f"live {r['policy']:22s} RTF {r['rtf']:.3f}  p95 {r['p95_ms']:.0f} ms  {r['steps_per_pass']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
