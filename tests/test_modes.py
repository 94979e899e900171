"""Every approximate mode (quantized weights x KV cache storage) keeps the
exact mode's streaming property: any chunking of the audio gives the offline
tokens, because every kernel is row-deterministic. And each mode stays near
the exact one, as voxtral.testing.accuracy measures it (per-matrix error on
the activations the exact model produces, teacher-forced distributions).

Small checkpoint: every row length a multiple of 256 (q4_k's super-block)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxtral
from stream_util import mode_dirs, stream_tokens
from voxtral.audio import load_audio
from voxtral.testing.accuracy import compare

MODES = [("q8_0", "f32"), ("q4_0", "int8"), ("q4_k", "f32"), ("q4_k", "bf16")]
WAV = "night1968_5s_dont_worry_about_him.wav"

# Relative RMS error of one linear output, on real activations: the weight
# error of the format (q8_0 ~0.5 %, 4-bit ~7-9 % on Gaussian weights) plus
# the int8 activations' (~0.5 %), with margin; q4_k must beat q4_0 (same
# 4.5 bits per weight).
MATRIX_REL_RMS = {"q8_0": 0.02, "q4_0": 0.15, "q4_k": 0.13}


@pytest.fixture(scope="module")
def small_dirs(tmp_path_factory):
    return mode_dirs(tmp_path_factory.mktemp("modes"))


@pytest.fixture(scope="module")
def audio(audio_dir):
    return load_audio(audio_dir / WAV)


@pytest.mark.parametrize("weights,kv", MODES)
def test_any_chunking_gives_offline_tokens(small_dirs, audio, weights, kv):
    model = voxtral.load(small_dirs[weights], kv_cache=kv)
    offline = model.transcribe(audio, 16000).token_ids
    assert len(offline) > 20

    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        sizes=st.lists(
            st.one_of(st.integers(1, 400), st.integers(401, 4000), st.integers(4001, 40000)), min_size=1, max_size=6
        )
    )
    def chunked(sizes):
        assert stream_tokens(model, audio, sizes, kv_cache=kv) == offline

    chunked()


def test_modes_stay_near_the_exact_one(small_dirs, audio_dir):
    exact = voxtral.load(small_dirs["bf16"])
    reports = {qt: compare(exact, voxtral.load(small_dirs[qt]), audio_dir / WAV, qt) for qt in ("q8_0", "q4_0", "q4_k")}
    for qt, r in reports.items():
        assert r.steps > 20
        errs = r.matrix_rel_rms
        assert len(errs) == 2 * 7 + 2 * 7 + 3  # every linear layer was seen on real activations
        assert max(errs.values()) < MATRIX_REL_RMS[qt], (qt, max(errs, key=errs.get))
        assert 0 <= r.kl_mean and 0 <= r.top1_agreement <= 1
    mean = {qt: float(np.mean(list(r.matrix_rel_rms.values()))) for qt, r in reports.items()}
    assert mean["q8_0"] < mean["q4_k"] < mean["q4_0"]
    # 8-bit weights barely move the output distribution; 4-bit ones move it more
    assert reports["q8_0"].kl_mean < reports["q4_k"].kl_mean
    assert reports["q8_0"].top1_agreement >= 0.9


def test_kv_modes_measured_by_the_same_tool(small_dirs, audio_dir):
    model = voxtral.load(small_dirs["bf16"])
    same = compare(model, model, audio_dir / WAV, "f32", approx_stream_kw={"kv_cache": "f32"})
    assert same.kl_max == 0 and same.top1_agreement == 1 and same.first_divergence is None
    int8 = compare(model, model, audio_dir / WAV, "int8", approx_stream_kw={"kv_cache": "int8"})
    assert 0 < int8.kl_mean and int8.logit_max_rel < 0.05
    assert all(e == 0 for e in int8.matrix_rel_rms.values())  # same weights: only the cache differs
