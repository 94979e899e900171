"""Models saved the way people save them (issue 15): transformers'
``save_pretrained`` of a model held in float32 (its default dtype) writes F32
tensors, one held in float16 writes F16. Both load: F32 whose values BF16
holds exactly gives the BF16 model's tokens with no warning; F16 (which BF16
cannot hold exactly) is rounded once at load, with one warning."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import voxtral  # noqa: E402
from voxtral.safetensors_io import SafetensorsFile, bf16_to_float32, float_to_bf16  # noqa: E402
from voxtral.weights import PrecisionWarning  # noqa: E402


def _saved(hf_dir, out, dtype, fine_tune=False):
    """``fine_tune``: nudge every weight in float32 (as training would), so BF16 no longer holds them exactly."""
    from transformers import VoxtralRealtimeForConditionalGeneration

    model = VoxtralRealtimeForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
    if fine_tune:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 2**-9)  # below BF16 precision, within F16
    model.to(dtype).save_pretrained(str(out))
    for name in ("tekken.json", "preprocessor_config.json"):
        if (hf_dir / name).exists() and not (out / name).exists():
            shutil.copyfile(hf_dir / name, out / name)
    return out


def _dtypes(directory) -> set[str]:
    found = set()
    for path in directory.glob("*.safetensors"):
        f = SafetensorsFile(path)
        found |= {f.dtype_name(k) for k in f.keys() if len(f.shape(k)) >= 2}
    return found


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(3)
    return (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)


def test_f32_save_pretrained_gives_the_bf16_tokens(tiny_ckpt, tmp_path, audio):
    out = _saved(tiny_ckpt["hf"], tmp_path / "f32", torch.float32)
    assert _dtypes(out) == {"F32"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)  # exactly representable: nothing to say
        f32 = voxtral.load(out, download=False)
    bf16 = voxtral.load(tiny_ckpt["hf"], download=False)
    assert f32.transcribe(audio, sample_rate=16000).token_ids == bf16.transcribe(audio, sample_rate=16000).token_ids
    a, b = f32.weights.decoder_layers[0], bf16.weights.decoder_layers[0]
    np.testing.assert_array_equal(np.asarray(a.wq), np.asarray(b.wq))


def test_f16_of_a_bf16_model_loads_exactly(tiny_ckpt, tmp_path, audio):
    out = _saved(tiny_ckpt["hf"], tmp_path / "f16", torch.float16)  # BF16 values that F16 holds: exact both ways
    assert _dtypes(out) == {"F16"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        f16 = voxtral.load(out, download=False)
    bf16 = voxtral.load(tiny_ckpt["hf"], download=False)
    assert f16.transcribe(audio, sample_rate=16000).token_ids == bf16.transcribe(audio, sample_rate=16000).token_ids


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_fine_tuned_save_pretrained_is_rounded_once_with_one_warning(tiny_ckpt, tmp_path, audio, dtype):
    out = _saved(tiny_ckpt["hf"], tmp_path / dtype, getattr(torch, dtype), fine_tune=True)
    assert _dtypes(out) == {"F16" if dtype == "float16" else "F32"}
    with pytest.warns(PrecisionWarning) as caught:
        model = voxtral.load(out, download=False)
    assert len([w for w in caught if issubclass(w.category, PrecisionWarning)]) == 1
    # each matrix is BF16(round-to-nearest-even of the F16 values), as torch rounds
    f = next(
        SafetensorsFile(p)
        for p in out.glob("*.safetensors")
        if any("layers.0.self_attn.q_proj" in k for k in SafetensorsFile(p).keys())
    )
    name = next(k for k in f.keys() if "language_model" in k and "layers.0.self_attn.q_proj.weight" in k)
    expected = torch.from_numpy(np.array(f.tensor(name))).to(torch.bfloat16).float().numpy()
    got = bf16_to_float32(np.asarray(model.weights.decoder_layers[0].wq)).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)
    assert model.transcribe(audio, sample_rate=16000).text is not None


def test_float_to_bf16_matches_torch_rounding():
    x = np.random.default_rng(0).standard_normal((300, 70)).astype(np.float32)
    x[0, :4] = [1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 65504.0]  # ties to even, both signs
    bits, exact, finite = float_to_bf16(x, rows_per_block=7)
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, expected)
    assert not exact and finite
    again, exact, _ = float_to_bf16(bf16_to_float32(bits).reshape(x.shape))
    assert exact and np.array_equal(again, bits)
    x[5, 5] = np.inf
    assert not float_to_bf16(x)[2]
