"""Kernel speed as ratios to what the machine can do:
- decoder-step GEMV (M=1): weight bytes streamed per second / memory bandwidth,
- encoder/prefill GEMM: FLOP/s / numpy's BLAS SGEMM rate on the same shape,
and to the reference (torch's float32 linear on the same shape)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import sgemm_rate
from voxtral import _kernels as K


def _bf16(shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    return (a.view(np.uint32) >> 16).astype(np.uint16)


def _torch_linear_time(x, w_bf16, repeats=3):
    try:
        import torch
    except ImportError:
        return None
    import time

    torch.set_num_threads(K.get_num_threads())
    wt = torch.from_numpy((w_bf16.astype(np.uint32) << 16).view(np.float32))
    xt = torch.from_numpy(x)
    torch.nn.functional.linear(xt, wt)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.nn.functional.linear(xt, wt)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize(
    "N,K_",
    [(9216, 3072), (3072, 9216), (4096, 3072), (131072, 3072)],
    ids=["w1-9216x3072", "w2-3072x9216", "wq-4096x3072", "lm_head-131072x3072"],
)
def test_gemv_decoder_shapes(benchmark, bandwidth, N, K_):
    w = _bf16((N, K_))
    x = np.random.default_rng(1).standard_normal((1, K_), dtype=np.float32)
    out = np.empty((1, N), np.float32)
    benchmark.pedantic(K.matmul_bf16, args=(x, w), kwargs={"out": out}, rounds=10, iterations=1, warmup_rounds=2)
    t = benchmark.stats.stats.min
    ref = _torch_linear_time(x, w)
    benchmark.extra_info.update(
        isa=K.active_isa(),
        threads=K.get_num_threads(),
        weight_gb_s=round(w.nbytes / t / 1e9, 2),
        bandwidth_gb_s=round(bandwidth / 1e9, 2),
        ratio_to_bandwidth=round(w.nbytes / t / bandwidth, 3),
        speedup_vs_torch_fp32=None if ref is None else round(ref / t, 2),
    )


@pytest.mark.parametrize("M", [64, 256])
@pytest.mark.parametrize("N,K_", [(5120, 1280), (1280, 5120), (2048, 1280)], ids=["enc-w1", "enc-w2", "enc-wq"])
def test_gemm_encoder_shapes(benchmark, M, N, K_):
    w = _bf16((N, K_))
    x = np.random.default_rng(1).standard_normal((M, K_), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    benchmark.pedantic(K.matmul_bf16, args=(x, w), kwargs={"out": out}, rounds=5, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    flops = 2.0 * M * N * K_
    sgemm = sgemm_rate(M, N, K_)
    ref = _torch_linear_time(x, w)
    benchmark.extra_info.update(
        isa=K.active_isa(),
        threads=K.get_num_threads(),
        gflops=round(flops / t / 1e9, 1),
        sgemm_gflops=round(sgemm / 1e9, 1),
        ratio_to_sgemm=round(flops / t / sgemm, 3),
        speedup_vs_torch_fp32=None if ref is None else round(ref / t, 2),
    )


def test_attention_decoder_step_full_window(benchmark):
    """One decoder query over a full 8192-position window (32 q / 8 kv heads x 128)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 32, 128), dtype=np.float32)
    k = rng.standard_normal((8192, 8, 128), dtype=np.float32)
    v = rng.standard_normal((8192, 8, 128), dtype=np.float32)
    out = np.empty_like(q)
    benchmark.pedantic(K.attention, args=(q, k, v, out, 8191, 0, 8192, 128**-0.5), rounds=5, iterations=1)
    t = benchmark.stats.stats.min
    benchmark.extra_info.update(isa=K.active_isa(), kv_gb_s=round((k.nbytes + v.nbytes) / t / 1e9, 2))
