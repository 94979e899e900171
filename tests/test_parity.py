"""Parity with the reference implementation (transformers' VoxtralRealtime)
on random-weight checkpoints in the real formats.

Tolerances (stated, not tuned to pass):
- log-mel: max abs error <= 1e-4 (features are O(1)).
- encoder output / audio embeddings: max abs error <= 1e-3 x the reference's range.
- logits: max abs error <= 1e-3 x the logit range (max - min) of that step.
- greedy tokens: identical at every step.
"""

from __future__ import annotations

import numpy as np
import pytest

import voxtral
from voxtral.audio import load_audio

reference = pytest.importorskip("reference")
pytest.importorskip("transformers")

MEL_TOL = 1e-4
REL_TOL = 1e-3


def _wavs(audio_dir):
    return sorted(audio_dir.glob("*.wav"))


def _rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    span = float(ref.max() - ref.min()) or 1.0
    return float(np.abs(ours - ref).max()) / span


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"])


def test_log_mel_matches_reference_on_real_recordings(tiny_model, audio_dir):
    wavs = _wavs(audio_dir)
    assert wavs, "no recordings found"
    for wav in wavs:
        audio = load_audio(wav)
        ref = reference.reference_log_mel(audio)  # [n_mels, frames]
        ours = tiny_model.front.spectrogram(audio)  # [frames, n_mels]
        assert ours.shape == ref.T.shape
        err = float(np.abs(ours - ref.T).max())
        assert err <= MEL_TOL, f"{wav.name}: log-mel max abs error {err:.2e}"


def _ours(model, audio, delay_ms, chunk=None):
    stream = model.stream(delay_ms, keep_logits=True)
    if chunk is None:
        stream.feed(audio)
    else:
        for s in range(0, len(audio), chunk):
            stream.feed(audio[s : s + chunk])
    stream.finish()
    return stream


def _check_against_reference(model, ref_model, audio, delay_ms, label):
    ref = reference.reference_offline(ref_model, audio, delay_ms=delay_ms)
    # Streamed log-mel of the padded signal == the reference's padded features.
    feats = ref["input_features"]
    ours_stream = _ours(model, audio, delay_ms)
    padded_len = feats.shape[1] * model.config.audio.hop_length
    left = model.config.n_left_pad_tokens * model.config.audio.samples_per_token
    padded = np.zeros(padded_len, dtype=np.float32)
    padded[left : left + len(audio)] = audio
    mel = model.front.spectrogram(padded)
    assert np.abs(mel - feats.T).max() <= MEL_TOL, f"{label}: padded log-mel differs"

    # Encoder output and audio embeddings from the reference's own features.
    enc_state = model.encoder.new_state()
    enc = model.encoder.encode_frames(enc_state, np.ascontiguousarray(feats.T))
    assert _rel_err(enc, ref["encoder_out"]) <= REL_TOL, f"{label}: encoder output"
    emb = model.encoder.push(model.encoder.new_state(), np.ascontiguousarray(feats.T))
    assert _rel_err(emb, ref["audio_embeds"]) <= REL_TOL, f"{label}: audio embeddings"

    # Tokens identical at every step, logits within tolerance.
    ref_tokens = list(ref["tokens"])
    pairs = enumerate(zip(ours_stream.tokens, ref_tokens, strict=False))
    first = next((i for i, (a, b) in pairs if a != b), min(len(ours_stream.tokens), len(ref_tokens)))
    assert ours_stream.tokens == ref_tokens, f"{label}: tokens differ at step {first}"
    assert len(ours_stream.logits) == len(ref["step_logits"])
    worst = max(_rel_err(a, b) for a, b in zip(ours_stream.logits, ref["step_logits"], strict=True))
    assert worst <= REL_TOL, f"{label}: logits max error {worst:.2e} of the range"
    # The comparison means something only if the output is not one repeated token.
    assert len(set(ref_tokens)) >= 0.3 * len(ref_tokens), f"{label}: degenerate reference output"
    return ours_stream, ref


@pytest.mark.parametrize("delay_ms", [480, 160])
def test_tiny_matches_reference(tiny_ckpt, tiny_model, audio_dir, delay_ms):
    ref_model = reference.load_reference(tiny_ckpt["hf"])
    audio = load_audio(audio_dir / "jfk.wav")
    _check_against_reference(tiny_model, ref_model, audio, delay_ms, f"tiny@{delay_ms}")


def test_every_isa_gives_the_reference_tokens(tiny_ckpt, tiny_model, audio_dir):
    from voxtral import _kernels

    ref_model = reference.load_reference(tiny_ckpt["hf"])
    audio = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    expected = list(reference.reference_offline(ref_model, audio, delay_ms=480)["tokens"])
    before = _kernels.active_isa()
    try:
        for isa in _kernels.available_isas():
            _kernels.set_isa(isa)
            assert tiny_model.transcribe(audio, 16000).token_ids == expected, isa
    finally:
        _kernels.set_isa(before)


def test_hf_layout_gives_identical_tokens(tiny_ckpt, tiny_model, audio_dir):
    hf_model = voxtral.load(tiny_ckpt["hf"])
    assert hf_model.layout == "hf" and tiny_model.layout == "native"
    audio = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    a = tiny_model.transcribe(audio, 16000)
    b = hf_model.transcribe(audio, 16000)
    assert a.token_ids == b.token_ids
    assert len(set(a.token_ids)) > 5
    # Negative control: HF rows with the native RoPE pairing are a different model.
    import dataclasses

    for part in (hf_model.encoder, hf_model.decoder):
        part.attn = dataclasses.replace(part.attn, interleaved=True)
    assert hf_model.transcribe(audio, 16000).token_ids != a.token_ids


def test_chunked_feeding_matches_offline(tiny_model, audio_dir):
    audio = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    whole = _ours(tiny_model, audio, 480).tokens
    for chunk in (1280, 777, 16000):
        assert _ours(tiny_model, audio, 480, chunk=chunk).tokens == whole, chunk


@pytest.mark.parametrize("delay_ms", [480, 960])
def test_fullwidth_matches_reference(fullwidth_ckpt, audio_dir, delay_ms):
    model = voxtral.load(fullwidth_ckpt["native"])
    assert model.config.decoder.dim == 3072 and model.config.encoder.dim == 1280
    ref_model = reference.load_reference(fullwidth_ckpt["hf"])
    audio = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    _check_against_reference(model, ref_model, audio, delay_ms, f"fullwidth@{delay_ms}")
