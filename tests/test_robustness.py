"""Inputs that used to crash, hang or print a traceback: sample rates, thread
counts, environment variables, absurd WAV headers. Each gets a typed error
(or, for the environment, a warning and the default) and never a crash."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import voxtral
from test_audio import fmt_body, make_wav
from voxtral import _kernels as K
from voxtral.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, load_audio
from voxtral.errors import AudioError, UsageError
from voxtral.threads import MAX_THREADS, check_num_threads, thread_cap


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"])


def _run(code: str, env_extra: dict, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, *args] if not code else [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# ---- sample rates ----------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 100, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 2_000_000_000])
def test_wav_with_absurd_rate_is_refused_quickly(rate):
    wav = make_wav(np.zeros(1000, "<i2").tobytes(), rate=rate)
    t = time.monotonic()
    with pytest.raises(AudioError, match="sample rate"):
        load_audio(wav)
    assert time.monotonic() - t < 1.0


@pytest.mark.parametrize("rate", [1, 100, 0, -16000, 10**9, 16000.5, float("nan"), "16000", True])
def test_array_rate_out_of_bounds_is_usage_error(model, rate):
    with pytest.raises(UsageError, match="sample_rate"):
        model.transcribe(np.zeros(1600, np.float32), sample_rate=rate)


@pytest.mark.parametrize("rate", [1, 100, 0, -1, 10**9])
def test_stream_rate_out_of_bounds_is_usage_error(model, rate):
    with pytest.raises(UsageError, match="sample_rate"):
        model.stream(sample_rate=rate)


def test_rates_at_the_bounds_work(model):
    for rate in (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE):
        x = load_audio(np.zeros(rate // 10, np.float32), sample_rate=rate)
        assert abs(len(x) - 1600) <= 1
        s = model.stream(sample_rate=rate)
        s.feed(np.zeros(rate // 10, np.float32))
        s.finish()
        assert abs(s.samples_in - 1600) <= 1


def test_resampled_length_is_bounded(monkeypatch):
    import voxtral.audio as A

    monkeypatch.setattr(A, "MAX_AUDIO_SECONDS", 2)
    with pytest.raises(AudioError, match="hours of audio"):
        load_audio(np.zeros(3 * 8000, np.float32), sample_rate=8000)
    assert len(load_audio(np.zeros(8000, np.float32), sample_rate=8000)) == 16000


def test_raw_rate_out_of_bounds_is_usage_error():
    import io

    from voxtral.audio import read_audio_stream

    for rate in (0, -5, 1, 100):
        with pytest.raises(UsageError, match="raw"):
            list(read_audio_stream(io.BytesIO(b"\0" * 3200), 16000, raw_format="s16le", raw_rate=rate))


# ---- absurd WAV headers ----------------------------------------------------


def _wav_with_fmt(tag, channels, rate, byte_rate, block_align, bits, data=b"\0" * 64):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)
    return make_wav(data, fmt=fmt)


@pytest.mark.parametrize(
    "fields, message",
    [
        ((1, 65535, 16000, 0, 65535 * 2 & 0xFFFF, 16), "channels"),
        ((1, 0, 16000, 0, 2, 16), "channels"),
        ((1, 1, 2_000_000_000, 0, 2, 16), "sample rate"),
        ((1, 1, 16000, 0, 1, 7), "bit depth"),
        ((1, 1, 16000, 0, 2, 12), "bit depth"),
        ((1, 1, 16000, 0, 4, 16), "block align"),
        ((1, 2, 16000, 0, 2, 16), "block align"),
        ((3, 1, 16000, 0, 4, 16), "float bit depth"),
    ],
)
def test_absurd_wav_headers_are_refused(fields, message):
    with pytest.raises(AudioError, match=message):
        load_audio(_wav_with_fmt(*fields))


def test_sane_header_through_the_same_builder_loads():
    x = load_audio(_wav_with_fmt(1, 2, 16000, 64000, 4, 16, data=np.full(64, 16384, "<i2").tobytes()))
    np.testing.assert_array_equal(x, np.full(32, 0.5, np.float32))
    assert fmt_body(1, 1, 16000, 16)  # the shared builder still writes a consistent header


# ---- threads ---------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, MAX_THREADS + 1, 100000, 10**12, 2.5, "4", True])
def test_num_threads_out_of_bounds_is_usage_error(n, tmp_path):
    with pytest.raises(UsageError, match="num_threads"):
        voxtral.load(tmp_path, num_threads=n)  # refused before the directory is even looked at


def test_num_threads_is_capped(tiny_ckpt):
    before = K.get_num_threads()
    try:
        voxtral.load(tiny_ckpt["native"], num_threads=MAX_THREADS)
        assert K.get_num_threads() == thread_cap() < MAX_THREADS
        assert check_num_threads(1) == 1
    finally:
        K.set_num_threads(before)


def test_kernels_clamp_huge_thread_counts_and_stft_still_runs():
    """The C side does not trust the count either: 100000 threads used to
    segfault in stft_power."""
    rng = np.random.default_rng(0)
    sig = rng.standard_normal(16000).astype(np.float32)
    win = np.hanning(400).astype(np.float32)
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        ref = K.stft_power(sig, win, 160, 90)
        K.set_num_threads(100000)
        assert K.get_num_threads() == MAX_THREADS
        np.testing.assert_array_equal(K.stft_power(sig, win, 160, 90), ref)
    finally:
        K.set_num_threads(before)


# ---- environment variables -------------------------------------------------


@pytest.mark.parametrize(
    "env, warned",
    [
        ({"VOXTRAL_NUM_THREADS": "abc"}, "VOXTRAL_NUM_THREADS"),
        ({"VOXTRAL_NUM_THREADS": "0"}, "VOXTRAL_NUM_THREADS"),
        ({"VOXTRAL_NUM_THREADS": "100000"}, "VOXTRAL_NUM_THREADS"),
        ({"VOXTRAL_ISA": "bogus"}, "VOXTRAL_ISA"),
    ],
)
def test_bad_environment_warns_and_uses_defaults(env, warned):
    code = (
        "import voxtral._kernels as K; "
        "print(K.get_num_threads(), K.physical_cores(), K.active_isa(), K.available_isas()[-1])"
    )
    r = _run(code, env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert warned in r.stderr and r.stderr.count("Warning") == 1
    threads, cores, isa, best = r.stdout.split()
    assert threads == cores and isa == best


def test_good_environment_is_applied():
    r = _run(
        "import voxtral._kernels as K; print(K.get_num_threads(), K.active_isa())",
        {"VOXTRAL_NUM_THREADS": "1", "VOXTRAL_ISA": "scalar"},
    )
    assert r.returncode == 0 and r.stderr == "" and r.stdout.split() == ["1", "scalar"]


def test_help_with_bad_environment_needs_no_numpy():
    code = (
        "import sys, runpy; sys.argv = ['voxtral', '--help']\n"
        "try:\n    runpy.run_module('voxtral', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "print('numpy' in sys.modules, 'voxtral._kernels' in sys.modules)"
    )
    r = _run(code, {"VOXTRAL_NUM_THREADS": "abc", "VOXTRAL_ISA": "bogus"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False False"
