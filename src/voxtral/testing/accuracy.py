"""How far an approximate mode (quantized weights, a compact KV cache) is from
the exact one, measured on real audio.

- Per matrix: the relative RMS error ||x W'^T - x W^T|| / ||x W^T|| of every
  linear layer, on the inputs the EXACT model feeds that layer while it
  transcribes the recording (so each matrix is judged on realistic
  activations, not on random vectors).
- Per step: the exact model's greedy run fixes the tokens; the approximate
  model is fed those same tokens (teacher forcing) and its output
  distribution is compared with the exact one at every step: KL(exact ||
  approx) and whether its top-1 token is the exact one.
- Free running: the approximate model decodes greedily on its own; the share
  of positions where its tokens equal the exact run's, and the first
  position where they differ.

With random-weight checkpoints this measures the numerical distance between
modes, not word error rate: the real-weights test does that (``-m realweights``).

Command line::

    python -m voxtral.testing.accuracy MODEL_DIR [--quant q8_0 q4_0 q4_k] \\
        [--kv-cache f32 bf16 int8] [--audio FILE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import linear as linear_module
from ..audio import load_audio
from ..config import DEFAULT_DELAY_MS
from ..stream import Stream

_ROWS_PER_MATRIX = 64  # captured input rows per matrix: enough for a stable RMS


def named_matrices(weights) -> dict[str, object]:
    """Every weight matrix that goes through linear(), by a readable name."""
    out: dict[str, object] = {
        "adapter1": weights.adapter1,
        "adapter2": weights.adapter2,
        "lm_head": weights.tok_embeddings,
    }
    for prefix, layers in (("enc", weights.encoder_layers), ("dec", weights.decoder_layers)):
        for i, lw in enumerate(layers):
            for f in fields(lw):
                if f.name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
                    out[f"{prefix}.{i}.{f.name}"] = getattr(lw, f.name)
    return out


class _InputRecorder:
    """linear.observer that keeps the first rows each matrix sees."""

    def __init__(self, matrices: dict[str, object]):
        self.by_id = {id(w): name for name, w in matrices.items()}
        self.inputs: dict[str, list[np.ndarray]] = {}

    def __call__(self, x, w) -> None:
        name = self.by_id.get(id(w))
        if name is None:
            return
        kept = self.inputs.setdefault(name, [])
        have = sum(a.shape[0] for a in kept)
        if have < _ROWS_PER_MATRIX:
            kept.append(np.array(x[: _ROWS_PER_MATRIX - have], dtype=np.float32))


class _TeacherForced(Stream):
    """A stream that records every step's logits and, while ``forced`` lasts,
    continues with the forced token instead of its own argmax."""

    def __init__(self, *args, forced: list[int], **kwargs):
        self._forced = forced
        self.step_logits: list[np.ndarray] = []
        super().__init__(*args, **kwargs)

    def _emit(self, logits, position):
        self.step_logits.append(np.array(logits, dtype=np.float64))
        step = len(self.tokens)
        if step < len(self._forced):
            forced = np.full_like(logits, -np.inf)
            forced[self._forced[step]] = 0.0
            return super()._emit(forced, position)
        return super()._emit(logits, position)


def _run(model, samples: np.ndarray, delay_ms: int, forced: list[int] | None, **stream_kw):
    stream = _TeacherForced(model, model.stream_options(delay_ms=delay_ms, **stream_kw), forced=forced or [])
    stream.feed(samples)
    stream.finish()
    return stream


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


@dataclass
class ModeReport:
    mode: str
    audio: str
    steps: int
    kl_mean: float
    kl_max: float
    top1_agreement: float  # teacher-forced
    logit_max_rel: float  # teacher-forced: max |logit difference| / the exact step's logit range
    free_run_agreement: float  # own greedy tokens vs exact, position by position
    first_divergence: int | None
    matrix_rel_rms: dict[str, float] = field(default_factory=dict)

    def by_kind(self) -> dict[str, tuple[float, float]]:
        """Mean and max relative RMS error per matrix kind (dec.wq, enc.w1, ...)."""
        kinds: dict[str, list[float]] = {}
        for name, err in self.matrix_rel_rms.items():
            parts = name.split(".")
            kinds.setdefault(parts[0] if len(parts) == 1 else f"{parts[0]}.{parts[2]}", []).append(err)
        return {k: (float(np.mean(v)), float(np.max(v))) for k, v in sorted(kinds.items())}


@dataclass
class ExactRun:
    """The exact model's greedy run on one recording and the inputs each of
    its matrices saw: computed once, compared with every mode."""

    samples: np.ndarray
    stream: Stream
    inputs: dict[str, list[np.ndarray]]


def exact_run(exact, audio: str | Path, delay_ms: int = DEFAULT_DELAY_MS) -> ExactRun:
    samples = load_audio(audio, target_rate=exact.sample_rate)
    recorder = _InputRecorder(named_matrices(exact.weights))
    linear_module.observer = recorder
    try:
        ref = _run(exact, samples, delay_ms, None)
    finally:
        linear_module.observer = None
    return ExactRun(samples, ref, recorder.inputs)


def compare(
    exact,
    approx,
    audio: str | Path,
    mode: str,
    delay_ms: int = DEFAULT_DELAY_MS,
    approx_stream_kw: dict | None = None,
    reference: ExactRun | None = None,
) -> ModeReport:
    """Measure ``approx`` (a loaded model, or the same model with other
    stream options in ``approx_stream_kw``) against ``exact`` on one recording
    (``reference``: that recording's exact run, to share it between modes)."""
    reference = reference or exact_run(exact, audio, delay_ms)
    samples, ref = reference.samples, reference.stream
    matrices = named_matrices(exact.weights)
    kw = approx_stream_kw or {}
    forced = _run(approx, samples, delay_ms, ref.tokens, **kw)
    free = _run(approx, samples, delay_ms, None, **kw)

    kls, agree, rel_diff = [], [], []
    for step, (p_logits, q_logits) in enumerate(zip(ref.step_logits, forced.step_logits, strict=False)):
        rel_diff.append(float(np.abs(q_logits - p_logits).max() / max(np.ptp(p_logits), 1e-30)))
        lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
        kls.append(float(np.sum(np.exp(lp) * (lp - lq))))
        agree.append(int(np.argmax(q_logits)) == ref.tokens[step])
    n = min(len(ref.tokens), len(free.tokens))
    same = [a == b for a, b in zip(ref.tokens, free.tokens, strict=False)]
    first = next((i for i, s in enumerate(same) if not s), None)
    if first is None and len(ref.tokens) != len(free.tokens):
        first = n

    approx_mats = named_matrices(approx.weights)
    rel: dict[str, float] = {}
    for name, rows in reference.inputs.items():
        x = np.ascontiguousarray(np.concatenate(rows))
        y_exact = linear_module.linear(x, matrices[name]).astype(np.float64)
        y_approx = linear_module.linear(x, approx_mats[name]).astype(np.float64)
        rel[name] = float(np.linalg.norm(y_approx - y_exact) / max(np.linalg.norm(y_exact), 1e-30))
    return ModeReport(
        mode=mode,
        audio=Path(audio).name,
        steps=len(kls),
        kl_mean=float(np.mean(kls)),
        kl_max=float(np.max(kls)),
        top1_agreement=float(np.mean(agree)),
        logit_max_rel=max(rel_diff),
        free_run_agreement=float(np.mean(same)) if same else 1.0,
        first_divergence=first,
        matrix_rel_rms=rel,
    )


def markdown(reports: list[ModeReport]) -> str:
    lines = [
        (
            "| mode | audio | steps | KL mean | KL max | top-1 (forced) | max logit diff / range | "
            "free-run tokens equal | first divergence |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.mode} | {r.audio} | {r.steps} | {r.kl_mean:.2e} | {r.kl_max:.2e} | {r.top1_agreement:.3f} "
            f"| {r.logit_max_rel:.1e} "
            f"| {r.free_run_agreement:.3f} | {'-' if r.first_divergence is None else r.first_divergence} |"
        )
    kinds = sorted({k for r in reports for k in r.by_kind()})
    if kinds:
        modes = list(dict.fromkeys(r.mode for r in reports))
        lines += [
            "",
            "Relative RMS error of each linear output (mean / max over layers and recordings):",
            "",
            "| matrix | " + " | ".join(modes) + " |",
            "|---|" + "---|" * len(modes),
        ]
        for kind in kinds:
            cells = []
            for m in modes:
                vals = [r.by_kind()[kind] for r in reports if r.mode == m and kind in r.by_kind()]
                cells.append(
                    "-" if not vals else f"{np.mean([v[0] for v in vals]):.4f} / {np.max([v[1] for v in vals]):.4f}"
                )
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import voxtral

    ap = argparse.ArgumentParser(prog="python -m voxtral.testing.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--quant", nargs="*", default=["q8_0", "q4_0", "q4_k"], help="weight formats to measure")
    ap.add_argument("--kv-cache", nargs="*", default=["bf16", "int8"], help="KV cache types to measure (BF16 weights)")
    ap.add_argument(
        "--audio", nargs="*", type=Path, default=None, help="recordings (default: ../shared/data/audio/*.wav)"
    )
    ap.add_argument("--delay-ms", type=int, default=DEFAULT_DELAY_MS)
    ap.add_argument("--json", type=Path, default=None, help="also write every figure (per matrix) as JSON")
    a = ap.parse_args(argv)
    audio = a.audio or sorted((Path.cwd().parent / "shared" / "data" / "audio").glob("*.wav"))
    exact = voxtral.load(a.model_dir)
    modes: list[tuple[str, object, dict]] = [(f"weights {q}", voxtral.load(a.model_dir, quant=q), {}) for q in a.quant]
    modes += [(f"kv {kv}", exact, {"kv_cache": kv}) for kv in a.kv_cache]
    reports = []
    references = {path: exact_run(exact, path, a.delay_ms) for path in audio}
    for name, model, kw in modes:
        for path in audio:
            reports.append(compare(exact, model, path, name, a.delay_ms, kw, references[path]))
            print(f"{name} {path.name}: KL {reports[-1].kl_mean:.2e}", file=sys.stderr, flush=True)
    print(markdown(reports))
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
