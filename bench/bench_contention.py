"""Several busy processes on the same cores: the kernels' fair share.

P worker processes each run the same work on the kernels' default threads,
at the same time: live decoder steps of a model (``--model DIR``: 80 ms of
audio pushed, one engine step) or, without a model, the decoder layer's
seven quantized products (bench_small_m.py's shapes, two cold copies).
Two OpenMP wait settings:

- ``long``: libgomp's default spin of 300,000 iterations at every barrier
  (``GOMP_SPINCOUNT=300000``; what voxtral ran with before ``omp_waits.py``);
- ``short``: voxtral's default (``omp_waits.SHORT_SPINCOUNT``).

A process's fair share of the machine is 1/P of it, so a fair layer pass
takes P x the quiet single-process time (the faster setting's, median of
alternating quiet runs). Reported per setting and P: the slowest worker's
median ms per unit of work and its ratio to that fair time (1.0 = fair; above
it, waiting threads burn the time slices their partners need). Never
asserted; the figures depend on the machine and what else runs on it.

    python bench/bench_contention.py --processes 1,2,3 --seconds 6
    python bench/bench_contention.py --model /path/to/gguf-or-checkpoint --processes 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {"long": "300000", "short": None}  # None: voxtral's own default


def layer_work(qtype: str):
    """One decoder layer's quantized products per call (two cold copies, alternating)."""
    import numpy as np
    from bench_small_m import LAYER, quant_weights

    from voxtral import _kernels as K

    layers = [
        [(N, k, K.repack_q(quant_weights(qtype, N, k, 7 * c + i), qtype, k)) for i, (N, k) in enumerate(LAYER)]
        for c in range(2)
    ]
    xs = {k: np.random.default_rng(k).standard_normal((1, k), dtype=np.float32) for _, k in LAYER}
    outs = {N: np.empty((1, N), np.float32) for N, _ in LAYER}
    turn = [0]

    def one() -> None:
        turn[0] ^= 1
        for N, k, wp in layers[turn[0]]:
            K.matmul_qp(xs[k], wp, qtype, N, k, out=outs[N])

    return one


def step_work(model_dir: str):
    """One live step per call: 80 ms of speech pushed, one engine step (no drafts)."""
    from bench_server import CHUNK_S, RATE, speech

    import voxtral

    model = voxtral.load(model_dir, download=False)
    stream = model.stream(draft_steps=1)
    chunk = int(CHUNK_S * RATE)
    audio = speech(600.0, 0)
    stream.feed(audio[: 3 * RATE])
    at = [3 * RATE]

    def one() -> None:
        stream.push(audio[at[0] : at[0] + chunk])
        at[0] += chunk
        model.engine.step([stream])

    return one


def worker(seconds: float, qtype: str, model_dir: str | None) -> None:
    import numpy as np

    from voxtral import _kernels as K

    one = step_work(model_dir) if model_dir else layer_work(qtype)
    one()
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "ms": 1e3 * float(np.median(times)),
                "isa": K.active_isa(),
                "threads": K.get_num_threads(),
                "spincount": os.environ.get("GOMP_SPINCOUNT"),
            }
        ),
        flush=True,
    )


def run_together(processes: int, setting: str, seconds: float, qtype: str, model_dir: str | None) -> list[dict]:
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    env.pop("OMP_WAIT_POLICY", None)
    if SETTINGS[setting] is not None:
        env["GOMP_SPINCOUNT"] = SETTINGS[setting]
    cmd = [sys.executable, str(Path(__file__)), "--worker", "--seconds", str(seconds), "--qtype", qtype]
    if model_dir:
        cmd += ["--model", model_dir]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
        for _ in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdin is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker failed to start")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def measure(
    process_counts: list[int], seconds: float, qtype: str, model_dir: str | None = None, rounds: int = 3
) -> dict:
    report: dict = {"work": f"live steps of {model_dir}" if model_dir else f"{qtype} decoder layer", "rows": []}
    quiet: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    info: dict = {}
    for _ in range(rounds):  # alternating: drift hits both settings alike
        for setting in SETTINGS:
            result = run_together(1, setting, seconds, qtype, model_dir)[0]
            quiet[setting].append(result["ms"])
            if setting == "short":
                info = result  # what voxtral's default ran with
    quiet_ms = {setting: statistics.median(v) for setting, v in quiet.items()}
    fair_base = min(quiet_ms.values())
    for setting in SETTINGS:
        for p in process_counts:
            worst = (
                quiet_ms[setting]
                if p == 1
                else max(r["ms"] for r in run_together(p, setting, seconds, qtype, model_dir))
            )
            row = {
                "setting": setting,
                "processes": p,
                "worst_ms": round(worst, 3),
                "ratio_to_fair": round(worst / (p * fair_base), 2),
            }
            report["rows"].append(row)
            print(f"{setting:5s} P={p}: {worst:8.2f} ms per unit, {row['ratio_to_fair']:5.2f} x fair share", flush=True)
    report.update(isa=info["isa"], threads=info["threads"], short_spincount=info["spincount"])
    return report


def test_contention(benchmark):
    model_dir = os.environ.get("VOXTRAL_BENCH_CONTENTION_MODEL")
    report = benchmark.pedantic(measure, args=([1, 2, 3], 4.0, "q4_0", model_dir), rounds=1, iterations=1)
    benchmark.extra_info.update(report)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", default="1,2,3")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--qtype", default="q4_0")
    ap.add_argument("--model", help="a model directory or GGUF: time its live steps instead of a layer")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.seconds, args.qtype, args.model)
        return 0
    report = measure([int(p) for p in args.processes.split(",")], args.seconds, args.qtype, args.model)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
