"""Full-size model benchmark on a random-weight checkpoint of the real shapes.

Reports (pytest-benchmark extra_info, never asserted as wall time):
- load time of the 8.9 GB checkpoint (mmap, zero-copy),
- encoder seconds per second of audio, and its GFLOP/s as a ratio to numpy's SGEMM rate,
- decoder ms per token, and the weight bytes it streams per second as a ratio
  to the machine's measured memory bandwidth (the decoder step's roofline),
- peak RSS.

The checkpoint is generated once into $VOXTRAL_BENCH_DIR (default
~/.cache/voxtral-bench/full; 8.9 GB, a few minutes).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import pytest

import voxtral
from conftest import sgemm_rate
from voxtral import _kernels
from voxtral.audio import load_audio
from voxtral.decoder import DecoderRows


def _bench_dir() -> Path:
    return Path(os.environ.get("VOXTRAL_BENCH_DIR", Path.home() / ".cache" / "voxtral-bench")) / "full"


@pytest.fixture(scope="module")
def full_dir() -> Path:
    target = _bench_dir()
    if not (target / "consolidated.safetensors").is_file():
        from voxtral.testing.checkpoint import make_checkpoint

        make_checkpoint(target, preset="full", layout="native", seed=0)
    return target


@pytest.fixture(scope="module")
def model(full_dir):
    return voxtral.load(full_dir)


def _info(benchmark, **kw):
    benchmark.extra_info.update({"isa": _kernels.active_isa(), "threads": _kernels.get_num_threads(), **kw})


def test_load_time(benchmark, full_dir):
    model = benchmark.pedantic(voxtral.load, args=(full_dir,), rounds=3, iterations=1)
    size = sum(p.stat().st_size for p in full_dir.glob("*.safetensors"))
    _info(benchmark, checkpoint_gb=round(size / 1e9, 2), load_s=round(benchmark.stats.stats.min, 3))
    assert model.config.decoder.n_layers == 26


def test_encoder_per_audio_second(benchmark, model, audio_dir):
    audio = load_audio(audio_dir / "jfk.wav")[: 4 * 16000]
    mel = model.front.spectrogram(audio)
    seconds = audio.shape[0] / 16000

    def run():
        model.encoder.push(model.encoder.new_state(), mel)

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=1)
    e = model.config.encoder
    frames = mel.shape[0] // 2
    # FLOPs of the linear layers (attention scores are small at this length)
    per_frame = (
        2
        * e.n_layers
        * (e.dim * (e.n_heads * e.head_dim) * 2 + e.dim * e.n_kv_heads * e.head_dim * 2 + 3 * e.dim * e.hidden_dim)
    )
    flops = per_frame * frames
    t = benchmark.stats.stats.min
    sgemm = sgemm_rate(frames, e.hidden_dim, e.dim)
    _info(
        benchmark,
        audio_s=seconds,
        encoder_s_per_audio_s=round(t / seconds, 3),
        gflops=round(flops / t / 1e9, 1),
        sgemm_gflops=round(sgemm / 1e9, 1),
        ratio_to_sgemm=round(flops / t / sgemm, 3),
    )


def test_decoder_ms_per_token(benchmark, model, bandwidth):
    d = model.config.decoder
    cache = model.decoder.new_cache()
    ada = model.decoder.ada_scales(6)
    x = np.random.default_rng(0).standard_normal((39, d.dim), dtype=np.float32)
    model.decoder.forward([DecoderRows(cache, x, ada)])

    def step():
        x1 = np.random.default_rng(1).standard_normal((1, d.dim), dtype=np.float32)
        h = model.decoder.forward([DecoderRows(cache, x1, ada)])
        model.decoder.logits(h)

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    per_layer = (
        d.dim * (d.n_heads + 2 * d.n_kv_heads) * d.head_dim + d.n_heads * d.head_dim * d.dim + 3 * d.dim * d.hidden_dim
    )
    weight_bytes = 2 * (d.n_layers * per_layer + d.vocab_size * d.dim)
    bw = bandwidth
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _info(
        benchmark,
        ms_per_token=round(t * 1000, 1),
        weights_gb=round(weight_bytes / 1e9, 2),
        achieved_gb_s=round(weight_bytes / t / 1e9, 2),
        memory_bw_gb_s=round(bw / 1e9, 2),
        ratio_to_bandwidth=round(weight_bytes / t / bw, 3),
        peak_rss_gb=round(peak_rss / 1e9, 2),
    )
