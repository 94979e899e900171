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
- q4_0 / q8_0 run twice: on the GGML rows as the file holds them
  (matmul_q) and repacked at load (matmul_qp, what a loaded model runs).
- Small M: one decoder layer's seven products at M = 1, 2, 4, 8 rows
  (batched sessions, drafted steps), cold weights; extra_info has the ratio
  of each M's time to the M = 1 time of the same round.
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
    benchmark.extra_info.update(
        isa=K.active_isa(), q_kernels=K.q_kernels(), qp_kernels=K.qp_kernels(), threads=K.get_num_threads(), **kw
    )


LAYOUTS = ["ggml", "packed"]


def product(qtype: str, layout: str, N: int, K_: int):
    """(weights -> the layout's bytes, (x, w, out) -> out) for one weight matrix."""
    if layout == "packed":
        return (lambda w: K.repack_q(w, qtype, K_)), (lambda x, w, out: K.matmul_qp(x, w, qtype, N, K_, out=out))
    return (lambda w: w), (lambda x, w, out: K.matmul_q(x, w, qtype, K_, out=out))


def layouts_of(qtype: str) -> list[str]:
    return LAYOUTS if qtype in K.repacked_qtypes() else LAYOUTS[:1]


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
    _info(
        benchmark,
        ms=round(t * 1e3, 3),
        weight_gb_s=round(nbytes / t / 1e9, 2),
        read_bandwidth_gb_s=round(read_bandwidth / 1e9, 2),
        same_bytes_read_gb_s=round(local / 1e9, 2),
        ratio_to_read_bandwidth=round(nbytes / t / roof, 3),
    )


DECODER_CASES = [(qt, lay, n, k) for qt in QTYPES for lay in layouts_of(qt) for n, k in DECODER] + [
    ("q8_0", lay, 131072, 3072) for lay in layouts_of("q8_0")
]


@pytest.mark.parametrize(
    "qtype,layout,N,K_", DECODER_CASES, ids=[f"{q}-{lay}-{n}x{k}" for q, lay, n, k in DECODER_CASES]
)
def test_decoder_step_quant(benchmark, read_bandwidth, qtype, layout, N, K_):
    prep, call = product(qtype, layout, N, K_)
    weights = cold_copies(lambda s: prep(quant_weights(qtype, N, K_, s)), N * row_bytes(qtype, K_))
    x = np.random.default_rng(1).standard_normal((1, K_), dtype=np.float32)
    out = np.empty((1, N), np.float32)
    _gemv(benchmark, read_bandwidth, weights, lambda w: call(x, w, out))
    benchmark.extra_info["layout"] = layout


LAYER = [(4096, 3072), (1024, 3072), (1024, 3072), (3072, 4096), (9216, 3072), (9216, 3072), (3072, 9216)]
SMALL_M = [1, 2, 4, 8]
SMALL_M_CASES = [(qt, lay) for qt in QTYPES for lay in layouts_of(qt)]


@pytest.mark.parametrize("qtype,layout", SMALL_M_CASES, ids=[f"{q}-{lay}" for q, lay in SMALL_M_CASES])
def test_decoder_layer_small_m(benchmark, read_bandwidth, qtype, layout):
    """One decoder layer at M = 1, 2, 4, 8, the M values interleaved round by
    round over cold copies; the benchmark's own time is M = 1."""
    layer_bytes = sum(N * row_bytes(qtype, K_) for N, K_ in LAYER)
    n_copies = max(1, -(-COLD_BYTES // layer_bytes))
    layers = [
        [
            (product(qtype, layout, N, K_), product(qtype, layout, N, K_)[0](quant_weights(qtype, N, K_, 7 * c + i)))
            for i, (N, K_) in enumerate(LAYER)
        ]
        for c in range(n_copies)
    ]
    xs = {M: {k: np.random.default_rng(M).standard_normal((M, k), dtype=np.float32) for _, k in LAYER} for M in SMALL_M}

    def one_layer(M, layer):
        for ((_, call), w), (N, K_) in zip(layer, LAYER, strict=True):
            call(xs[M][K_], w, np.empty((M, N), np.float32))

    best = dict.fromkeys(SMALL_M, float("inf"))
    for _ in range(3):
        for M in SMALL_M:
            t = time.perf_counter()
            for layer in layers:
                one_layer(M, layer)
            best[M] = min(best[M], (time.perf_counter() - t) / len(layers))
    cycle = itertools.cycle(layers)
    benchmark.pedantic(lambda: one_layer(1, next(cycle)), rounds=2 * len(layers), iterations=1)
    t1 = best[1]
    _info(
        benchmark,
        layout=layout,
        layer_bytes=layer_bytes,
        m1_ms=round(t1 * 1e3, 3),
        m1_weight_gb_s=round(layer_bytes / t1 / 1e9, 2),
        ratio_to_read_bandwidth=round(layer_bytes / t1 / read_bandwidth, 3),
        **{f"m{M}_over_m1": round(best[M] / t1, 3) for M in SMALL_M[1:]},
    )


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


ENCODER_QCASES = [(qt, lay) for qt in QTYPES for lay in layouts_of(qt)]


@pytest.mark.parametrize("M", [4, 256])
@pytest.mark.parametrize("N,K_", ENCODER, ids=ENCODER_IDS)
@pytest.mark.parametrize("qtype,layout", ENCODER_QCASES, ids=[f"{q}-{lay}" for q, lay in ENCODER_QCASES])
def test_encoder_quant(benchmark, qtype, layout, M, N, K_):
    prep, call = product(qtype, layout, N, K_)
    w = prep(quant_weights(qtype, N, K_))
    x = np.random.default_rng(1).standard_normal((M, K_), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    _gemm(benchmark, M, N, K_, lambda: call(x, w, out))
    benchmark.extra_info["layout"] = layout


@pytest.mark.parametrize("M", [4, 256])
@pytest.mark.parametrize("N,K_", ENCODER, ids=ENCODER_IDS)
def test_encoder_bf16(benchmark, M, N, K_):
    w = bf16_weights(N, K_)
    x = np.random.default_rng(1).standard_normal((M, K_), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    _gemm(benchmark, M, N, K_, lambda: K.matmul_bf16(x, w, out=out))
