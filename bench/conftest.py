"""Shared benchmark fixtures: the machine's roofline numbers and test data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def measure_bandwidth(nbytes: int = 1024 * 1024 * 1024) -> float:
    """Sustained memory bandwidth in bytes/s: a large copy (read + write), best of 3."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def measure_read_bandwidth(nbytes: int = 1024 * 1024 * 1024, repeats: int = 10) -> float:
    """Sustained read-only memory bandwidth in bytes/s: every thread the kernels
    use streams its share of a buffer far larger than the caches (an xor of
    every word, nothing written), best of `repeats`. The roofline of a
    memory-bound decoder step, which only reads its weights."""
    from voxtral import _kernels as K

    buf = np.ones(nbytes, dtype=np.uint8)  # touched: the pages exist before timing
    K.stream_read(buf)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        K.stream_read(buf)
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def sgemm_rate(m: int, n: int, k: int, repeats: int = 3) -> float:
    """numpy's BLAS float32 GEMM rate in FLOP/s for x[m,k] @ w[k,n]."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * n * k / best


@pytest.fixture(scope="session")
def bandwidth() -> float:
    return measure_bandwidth()


@pytest.fixture(scope="session")
def read_bandwidth() -> float:
    return measure_read_bandwidth()


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    d = SHARED / "data" / "audio"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d
