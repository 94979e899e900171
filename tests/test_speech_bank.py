"""The trained model's word bank (voxtral.testing.speech): text made in one
place, audio spoken by espeak-ng in another (the training machine), and the
trainer's reader taking either audio format."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from voxtral.testing import speech
from voxtral.testing.train import Bank

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

WORDS = ["time", "people", "never"]
TOKENS = {"time": [1100], "people": [1101, 1102], "never": [1103]}


def test_training_voices_exclude_the_heldout_variants_and_name_themselves():
    voices = speech.training_voices(64)
    assert len({v.name for v in voices}) == 64
    held = {v.voice.split("+")[1] for v in speech.HELDOUT_VOICES}
    assert not held & {v.voice.split("+")[1] for v in voices}
    assert all(speech.parse_voice(v.name) == v for v in voices)
    with pytest.raises(ValueError):
        speech.parse_voice("en-us+m1")


def test_bank_text_then_audio_raw_and_ogg_agree(tmp_path):
    voices = speech.training_voices(2)
    for kind in ("raw", "ogg"):
        out = tmp_path / kind
        speech.write_bank_text(out, WORDS, voices, [["time", "never"]], TOKENS, 32768)
        speech.write_bank_audio(out, workers=2, raw=kind == "raw")
        speech.write_bank_audio(out, workers=2, raw=kind == "raw")  # again: the offsets are replaced
    raw, ogg = Bank(tmp_path / "raw"), Bank(tmp_path / "ogg")
    assert (raw.offsets == ogg.offsets).all()
    assert raw.offsets.shape == (2, len(WORDS) + 1) and (np.diff(raw.offsets, axis=1) > 0).all()
    assert raw.tokens == TOKENS and raw.sentences == [["time", "never"]]
    for v in range(2):
        for w in WORDS:
            a, b = raw.clip(v, w), ogg.clip(v, w)
            assert 0.05 < a.shape[0] / 16000 < 1.5  # one spoken word
            assert np.abs(a).max() > 0.05
            # Vorbis is lossy: the clips agree in length and loudness, not sample for sample
            assert a.shape == b.shape
            assert abs(np.sqrt(np.mean(a**2)) - np.sqrt(np.mean(b**2))) < 0.25 * np.sqrt(np.mean(a**2))
