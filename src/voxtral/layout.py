"""Which on-disk layout a model directory holds, from the files present.

- ``native`` (Mistral): ``consolidated.safetensors`` + ``params.json`` + ``tekken.json``;
- ``hf`` (transformers): ``config.json`` + ``model*.safetensors`` or
  ``model.safetensors.index.json``;
- ``gguf`` (quantized, as ``python -m voxtral quantize`` writes it):
  ``model.gguf`` + ``tekken.json``.

Used by the loaders (``weights.py``) and by the model finder (``hub.py``);
it only looks at file names, so it needs neither numpy nor the C extension.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .errors import ModelNotFoundError

NATIVE_FILES = ("consolidated.safetensors", "params.json", "tekken.json")
GGUF_FILE = "model.gguf"
GGUF_FILES = (GGUF_FILE, "tekken.json")

PathArg = Union[str, "os.PathLike[str]"]


def _native_missing(d: Path) -> list[str]:
    return [f for f in NATIVE_FILES if not (d / f).is_file()]


def _hf_missing(d: Path) -> list[str]:
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json")
    has_weights = (d / "model.safetensors.index.json").is_file() or any(
        p.is_file() for p in d.glob("model*.safetensors")
    )
    if not has_weights:
        missing.append("model*.safetensors")
    return missing


def _gguf_missing(d: Path) -> list[str]:
    return [f for f in GGUF_FILES if not (d / f).is_file()]


def layout_or_none(d: Path) -> str | None:
    if not d.is_dir():
        return None
    if not _native_missing(d):
        return "native"
    if not _hf_missing(d):
        return "hf"
    if not _gguf_missing(d):
        return "gguf"
    return None


def detect_layout(model_dir: PathArg) -> str:
    """Return "native" (consolidated.safetensors + params.json + tekken.json),
    "hf" (config.json + model*.safetensors / model.safetensors.index.json) or
    "gguf" (model.gguf + tekken.json), in that order of preference when several
    are present. Raises :class:`ModelNotFoundError`
    naming the missing files otherwise."""
    d = Path(model_dir).expanduser()
    if not d.exists():
        raise ModelNotFoundError(f"model directory {d} does not exist")
    if not d.is_dir():
        raise ModelNotFoundError(f"{d} is a file, not a model directory (pass the directory that contains it)")
    native_missing = _native_missing(d)
    if not native_missing:
        return "native"
    hf_missing = _hf_missing(d)
    if not hf_missing:
        return "hf"
    gguf_missing = _gguf_missing(d)
    if not gguf_missing:
        return "gguf"
    inside = [
        sub.name
        for sub in sorted(d.iterdir())
        if sub.is_dir()
        and not _native_missing(sub)
        or sub.is_dir()
        and not _hf_missing(sub)
        or sub.is_dir()
        and not _gguf_missing(sub)
    ]
    if inside:  # e.g. python -m voxtral.testing.checkpoint OUT writes OUT/native and OUT/hf
        raise ModelNotFoundError(
            f"{d} holds model directories, not a model: use {' or '.join(str(d / n) for n in inside)}"
        )
    raise ModelNotFoundError(
        f"{d} is not a Voxtral model directory: the Mistral layout lacks {', '.join(native_missing)}, "
        f"the Hugging Face layout lacks {', '.join(hf_missing)} "
        f"and the quantized layout lacks {', '.join(gguf_missing)}"
    )
