"""Quantized-weight kernels (matmul_q) against the machine's limits, with the
BF16 kernel on the same shapes for comparison. Times are reported, never
asserted (shared, noisy machines).

- Decoder step (M=1): weight bytes streamed per second / read-only memory
  bandwidth. Each round reads a different copy of the weights (copies total
  well over the last-level cache), so the bytes come from DRAM as they do in
  a real decoder step. The bandwidth is the larger of the session's
  measurement (a 1 GiB buffer) and a read-only stream over the same weight
  copies right after the kernel's rounds (the same memory, at the same load
  of a shared machine).
- Encoder (M=4: one live 80 ms push; M=256: offline): integer GOPS
  (2*M*N*K / time).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from voxtral import _kernels as K
from voxtral.qformats import BLOCK, row_bytes

COLD_BYTES = 256 * 1024 * 1024  # weight copies per benchmark: 8x a 32 MB L3

DECODER = [(4096, 3072), (1024, 3072), (3072, 4096), (9216, 3072), (3072, 9216)]
ENCODER = [(2048, 1280), (1280, 2048), (5120, 1280), (1280, 5120), (3072, 5120), (3072, 3072)]
QTYPES = ["q4_0", "q4_k", "q8_0"]


def quant_weights(qtype: str, N: int, K_: int, seed: int = 0) -> np.ndarray:
    """Random valid blocks: random bytes with small finite fp16 scales (the
    kernels' speed does not depend on the values)."""
    r = np.random.default_rng(seed)
    w = r.integers(0, 256, (N, row_bytes(qtype, K_)), dtype=np.uint8)
    blocks = w.reshape(-1, BLOCK[qtype][1])
    scales = np.frombuffer(np.full(blocks.shape[0], 0.01, np.float16).tobytes(), np.uint8).reshape(-1, 2)
    blocks[:, 0:2] = scales
    if qtype == "q4_k":
        blocks[:, 2:4] = scales
    return w


def bf16_weights(N: int, K_: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((N, K_), dtype=np.float32)
    return (a.view(np.uint32) >> 16).astype(np.uint16)


def cold_copies(make, nbytes_one: int):
    n = max(1, -(-COLD_BYTES // nbytes_one))
    return [make(seed) for seed in range(n)]


def _info(benchmark, **kw):
    benchmark.extra_info.update(isa=K.active_isa(), q_kernels=K.q_kernels(), threads=K.get_num_threads(), **kw)


def same_bytes_read_bandwidth(weights, rounds: int) -> float:
    """Best read-only rate (bytes/s) of K.stream_read over the weight copies."""
    best = float("inf")
    for i in range(rounds):
        w = weights[i % len(weights)]
        t = time.perf_counter()
        K.stream_read(w.reshape(-1).view(np.uint8))
        best = min(best, (time.perf_counter() - t) / w.nbytes)
    return 1.0 / best


def _gemv(benchmark, read_bandwidth, weights, call):
    cycle = itertools.cycle(weights)
    rounds = max(10, 2 * len(weights))
    benchmark.pedantic(lambda: call(next(cycle)), rounds=rounds, iterations=1, warmup_rounds=len(weights))
    t = benchmark.stats.stats.min
    nbytes = weights[0].nbytes
    local = same_bytes_read_bandwidth(weights, rounds)
    roof = max(read_bandwidth, local)
    _info(benchmark, ms=round(t * 1e3, 3), weight_gb_s=round(nbytes / t / 1e9, 2),
          read_bandwidth_gb_s=round(read_bandwidth / 1e9, 2), same_bytes_read_gb_s=round(local / 1e9, 2),
          ratio_to_read_bandwidth=round(nbytes / t / roof, 3))


DECODER_CASES = [(qt, n, k) for qt in QTYPES for n, k in DECODER] + [("q8_0", 131072, 3072)]


@pytest.mark.parametrize("qtype,N,K_", DECODER_CASES, ids=[f"{q}-{n}x{k}" for q, n, k in DECODER_CASES])
def test_decoder_step_quant(benchmark, read_bandwidth, qtype, N, K_):
    weights = cold_copies(lambda s: quant_weights(qtype, N, K_, s), N * row_bytes(qtype, K_))
    x = np.random.default_rng(1).standard_normal((1, K_), dtype=np.float32)
    out = np.empty((1, N), np.float32)
    _gemv(benchmark, read_bandwidth, weights, lambda w: K.matmul_q(x, w, qtype, K_, out=out))


BF16_DECODER = DECODER + [(131072, 3072)]


@pytest.mark.parametrize("N,K_", BF16_DECODER, ids=[f"bf16-{n}x{k}" for n, k in BF16_DECODER])
def test_decoder_step_bf16(benchmark, read_bandwidth, N, K_):
    weights = cold_copies(lambda s: bf16_weights(N, K_, s), N * K_ * 2)
    x = np.random.default_rng(1).standard_normal((1, K_), dtype=np.float32)
    out = np.empty((1, N), np.float32)
    _gemv(benchmark, read_bandwidth, weights, lambda w: K.matmul_bf16(x, w, out=out))


def _gemm(benchmark, M, N, K_, call):
    benchmark.pedantic(call, rounds=5 if M > 4 else 20, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    _info(benchmark, ms=round(t * 1e3, 3), gops=round(2.0 * M * N * K_ / t / 1e9, 1))


ENCODER_IDS = [f"{n}x{k}" for n, k in ENCODER]


@pytest.mark.parametrize("M", [4, 256])
@pytest.mark.parametrize("N,K_", ENCODER, ids=ENCODER_IDS)
@pytest.mark.parametrize("qtype", QTYPES)
def test_encoder_quant(benchmark, qtype, M, N, K_):
    w = quant_weights(qtype, N, K_)
    x = np.random.default_rng(1).standard_normal((M, K_), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    _gemm(benchmark, M, N, K_, lambda: K.matmul_q(x, w, qtype, K_, out=out))


@pytest.mark.parametrize("M", [4, 256])
@pytest.mark.parametrize("N,K_", ENCODER, ids=ENCODER_IDS)
def test_encoder_bf16(benchmark, M, N, K_):
    w = bf16_weights(N, K_)
    x = np.random.default_rng(1).standard_normal((M, K_), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    _gemm(benchmark, M, N, K_, lambda: K.matmul_bf16(x, w, out=out))
