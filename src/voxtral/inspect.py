"""``python -m voxtral inspect DIR``: check a model directory the way loading
would, without reading the weights, and print what it holds.

Every check is the loaders' own (``hub.detect_layout``, ``config``,
``tokenizer``, ``safetensors_io`` headers, ``weights.load_weights`` for the
tensor names, shapes and dtypes, the index and the offsets): weight
matrices stay memory-mapped and unread, only the small vectors (norms,
biases) are read, as ``load()`` does. Each step runs even when an earlier one
failed, so that one run lists every problem it can see.

The summary is a :class:`Report` of sections (title + lines) and problems;
a layout adds its own ``_inspect_<layout>`` step to ``_TENSOR_STEPS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, ModelFileError, VoxtralError


@dataclass
class Report:
    model_dir: str
    layout: str | None = None
    # In print order; a section nobody wrote to is not printed.
    sections: dict[str, list[str]] = field(default_factory=lambda: {"config": [], "tokenizer": [], "tensors": []})
    problems: list[str] = field(default_factory=list)

    def add(self, section: str, line: str) -> None:
        self.sections.setdefault(section, []).append(line)

    def fail(self, exc: VoxtralError) -> None:
        self.problems.append(str(exc))

    @property
    def loadable(self) -> bool:
        return not self.problems

    def text(self) -> str:
        out = [f"model directory: {self.model_dir}", f"layout: {self.layout or 'unknown'}"]
        for title, lines in self.sections.items():
            if not lines:
                continue
            out.append(f"{title}:")
            out.extend(f"  {line}" for line in lines)
        if self.problems:
            out.append(f"NOT loadable: {len(self.problems)} problem(s)")
            out.extend(f"  - {p}" for p in self.problems)
        else:
            out.append("loadable: yes")
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {
            "model_dir": self.model_dir,
            "layout": self.layout,
            "loadable": self.loadable,
            "sections": self.sections,
            "problems": self.problems,
        }


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes < 1e9 else f"{nbytes / 1e9:.2f} GB"


def _describe_config(report: Report, cfg) -> None:
    e, d, a = cfg.encoder, cfg.decoder, cfg.audio
    report.add("config", f"source: {Path(cfg.source).name}")
    report.add(
        "config",
        f"encoder: {e.n_layers} layers, dim {e.dim}, {e.n_heads} heads x {e.head_dim} "
        f"(kv {e.n_kv_heads}), hidden {e.hidden_dim}, window {e.sliding_window}",
    )
    report.add(
        "config",
        f"decoder: {d.n_layers} layers, dim {d.dim}, {d.n_heads} heads x {d.head_dim} "
        f"(kv {d.n_kv_heads}), hidden {d.hidden_dim}, vocab {d.vocab_size}, "
        f"window {d.sliding_window}",
    )
    report.add(
        "config",
        f"audio: {a.sampling_rate} Hz, {a.num_mel_bins} mel bins, hop {a.hop_length}, "
        f"window {a.window_size}, {a.frame_rate:g} tokens/s, downsample {a.downsample_factor}",
    )


def _describe_files(report: Report, files) -> None:
    """Sizes and dtypes from the headers only."""
    dtypes: Counter = Counter()
    params = 0
    total = 0
    for f in files:
        n = 0
        for name in f.keys():
            shape = f.shape(name)
            count = 1
            for s in shape:
                count *= s
            params += count
            dtypes[f.dtype_name(name)] += 1
            n += 1
        total += f.size
        report.add("tensors", f"{f.path.name}: {n} tensors, {_mb(f.size)}")
    summary = ", ".join(f"{k} x {v}" for k, v in sorted(dtypes.items()))
    report.add(
        "tensors",
        f"total: {len(files)} file(s), {sum(dtypes.values())} tensors, {_mb(total)}, "
        f"{params / 1e6:.1f} M parameters; dtypes: {summary or 'none'}",
    )


def _describe_gguf(report: Report, d: Path) -> None:
    """A quantized directory: the GGUF's tensor types, sizes and recipe (its
    header only; load_weights below checks every tensor against the config)."""
    from . import gguf_io
    from .layout import GGUF_FILE

    try:
        f = gguf_io.GGUFFile(d / GGUF_FILE)
        quant = f.get_str(gguf_io.KEY_QUANT_TYPE)
    except VoxtralError as exc:
        report.fail(exc)
        return
    types: Counter = Counter()
    params = 0
    for ttype, shape, _data in f.tensors.values():
        types[ttype] += 1
        count = 1
        for s in shape:
            count *= s
        params += count
    summary = ", ".join(f"{k} x {v}" for k, v in sorted(types.items()))
    size = (d / GGUF_FILE).stat().st_size
    report.add(
        "tensors",
        f"{GGUF_FILE}: {len(f.tensors)} tensors, {_mb(size)}, {params / 1e6:.1f} M parameters, "
        f"quantized to {quant}; types: {summary}",
    )


def _open_all(report: Report, paths: list[Path]) -> list:
    from .safetensors_io import SafetensorsFile

    files = []
    for p in paths:
        try:
            files.append(SafetensorsFile(p))
        except VoxtralError as exc:
            report.fail(exc)
    return files


def _shards_native(d: Path) -> list[Path]:
    return [d / "consolidated.safetensors"]


def _shards_hf(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
            if all(isinstance(n, str) and Path(n).name == n for n in names):
                return [d / n for n in names]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # load_weights below reports the malformed index in its own words
    return sorted(d.glob("model*.safetensors"))


# Per layout: the safetensors files it reads (for the size/dtype summary).
_TENSOR_STEPS: dict[str, Callable[[Path], list[Path]]] = {"native": _shards_native, "hf": _shards_hf}


def inspect_dir(model_dir: str | Path) -> Report:
    """Check ``model_dir`` as ``voxtral.load`` would; never raises for a bad directory."""
    from .hub import detect_layout

    d = Path(model_dir).expanduser()
    report = Report(str(d))
    try:
        report.layout = detect_layout(d)
    except VoxtralError as exc:
        report.fail(exc)
        return report

    tokenizer = None
    try:
        from .tokenizer import TEKKEN_FILENAME, TekkenTokenizer

        tokenizer = TekkenTokenizer.from_file(d / TEKKEN_FILENAME)
        report.add(
            "tokenizer",
            f"{TEKKEN_FILENAME}: vocab {tokenizer.vocab_size} ({tokenizer.num_special} special), "
            f"version {tokenizer.version or '?'}",
        )
    except VoxtralError as exc:
        report.fail(exc)

    if report.layout == "gguf":
        _describe_gguf(report, d)
    else:
        files = _open_all(report, _TENSOR_STEPS[report.layout](d))
        if files:
            _describe_files(report, files)
        del files  # load_weights maps the files again, as load() does

    try:
        from .weights import load_weights

        audio = tokenizer.audio_config if tokenizer is not None else None
        cfg, _weights, _ = load_weights(d, audio_section=audio)
        _describe_config(report, cfg)
        if tokenizer is not None and tokenizer.vocab_size != cfg.decoder.vocab_size:
            report.fail(
                ConfigError(
                    f"{d}: tekken.json vocabulary ({tokenizer.vocab_size}) does not match the model's "
                    f"vocab_size ({cfg.decoder.vocab_size})"
                )
            )
    except VoxtralError as exc:
        if str(exc) not in report.problems:  # a shard already reported when opened
            report.fail(exc)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="voxtral inspect",
        description="Check a model directory the way loading would (config, tokenizer, every tensor "
        "header, the index and offsets) without reading the weights, and summarise it. "
        "Exit status 0 when it loads, 4 otherwise.",
    )
    ap.add_argument(
        "model_dir", metavar="DIR", help="model directory (Mistral-native, Hugging Face or quantized layout)"
    )
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    report = inspect_dir(a.model_dir)
    if a.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    if report.problems:
        return ModelFileError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
