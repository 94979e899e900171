"""The trained checkpoint and its held-out synthetic speech (tests/data/trained-synth),
shared by the accuracy and content tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TRAINED_DIR = Path(__file__).resolve().parent / "data" / "trained-synth"
MODEL_DIR = TRAINED_DIR / "model"
HELDOUT_DIR = TRAINED_DIR / "heldout"

# Held-out utterances (two held-out voices) that the exact model transcribes
# word for word at 480 ms: the content tests assert these words.
EXACT_UTTERANCES = ("utt016.flac", "utt021.flac", "utt032.flac")


def manifest() -> list[dict]:
    return json.loads((HELDOUT_DIR / "manifest.json").read_text(encoding="utf-8"))


def entry(name: str) -> dict:
    return next(m for m in manifest() if m["file"] == name)


def model_copy(dest: Path) -> Path:
    """A copy of the trained model directory (quantized caches go next to it, not into the repository)."""
    out = dest / "trained-model"
    if not out.is_dir():
        shutil.copytree(MODEL_DIR, out)
    return out
