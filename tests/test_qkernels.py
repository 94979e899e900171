"""Quantized-weight kernels (matmul_q) on every ISA this machine can run
(the others forced off through set_isa), against a float64 numpy reference:
weights from the `gguf` package (gguf.quants.quantize / dequantize, not our
code) and activations quantized in numpy by the rule the kernels document.

Tolerance: the int8 activations and the integer block dot products are
exact; only the fp32 scaling and accumulation of the per-block terms round.
Each term is a product of three fp32 values and the terms are summed along
at most nb + 8 additions, so we allow
    |ours - ref| <= (nb + 12) * 2**-24 * sum_k |xq_k| * (|w_k| terms)
(the q4_k mins are a separate term and count on their own). Row
determinism and thread independence are checked bit for bit.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from voxtral import _kernels as K
from voxtral.linear import linear
from voxtral.qformats import BLOCK, QuantMatrix, row_bytes

ISAS = K.available_isas()
GT = {
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_k": gguf.GGMLQuantizationType.Q4_K,
}
EPS32 = 2.0**-24

rng = np.random.default_rng(4321)


@pytest.fixture
def two_threads():
    before = K.get_num_threads()
    K.set_num_threads(2)
    yield
    K.set_num_threads(before)


def _f16_bytes(values) -> np.ndarray:
    return np.frombuffer(np.asarray(values, dtype=np.float16).tobytes(), dtype=np.uint8).reshape(-1, 2)


def make_weights(qtype: str, N: int, K_: int, seed: int = 0) -> np.ndarray:
    """uint8 [N, row bytes]: gguf's own quantizer for q8_0/q4_0; for q4_k (which
    gguf-py cannot quantize) random bytes with finite fp16 d and dmin, which
    are valid blocks."""
    r = np.random.default_rng(seed)
    if qtype != "q4_k":
        w = gguf_quantize(r.standard_normal((N, K_)).astype(np.float32), GT[qtype])
        return np.ascontiguousarray(w, dtype=np.uint8)
    w = r.integers(0, 256, (N, row_bytes(qtype, K_)), dtype=np.uint8)
    blocks = w.reshape(-1, 144)
    blocks[:, 0:2] = _f16_bytes(r.uniform(0.001, 0.02, blocks.shape[0]))
    blocks[:, 2:4] = _f16_bytes(r.uniform(0.001, 0.02, blocks.shape[0]))
    return w


def quantize_activations(x: np.ndarray) -> np.ndarray:
    """The documented activation rule, in numpy: per 32 values dx = amax/127
    (fp32), q = round-half-even(x/dx) (fp32 division); float64 dx * q."""
    xb = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    dx = (np.abs(xb).max(axis=-1, keepdims=True) / np.float32(127)).astype(np.float32)
    safe = np.where(dx > 0, dx, np.float32(1))
    q = np.where(dx > 0, np.rint(xb / safe), 0).clip(-127, 127)
    return (q.astype(np.float64) * dx.astype(np.float64)).reshape(x.shape)


def dequant64(w: np.ndarray, qtype: str) -> np.ndarray:
    return np.asarray(gguf_dequantize(w, GT[qtype]), dtype=np.float64)


def error_scale(xq: np.ndarray, w: np.ndarray, qtype: str) -> np.ndarray:
    """sum_k |xq_k| |w_k| per output, with the q4_k scale and min parts counted apart."""
    if qtype != "q4_k":
        return np.abs(xq) @ np.abs(dequant64(w, qtype)).T
    scaled, mins = w.copy(), w.copy()
    scaled.reshape(-1, 144)[:, 2:4] = 0  # dmin = 0: d * sc * q
    mins.reshape(-1, 144)[:, 0:2] = 0  # d = 0: -dmin * m
    return np.abs(xq) @ (np.abs(dequant64(scaled, qtype)) + np.abs(dequant64(mins, qtype))).T


def check(ours, x, w, qtype, bias=None, base=None):
    K_ = x.shape[1]
    xq = quantize_activations(x)
    ref = xq @ dequant64(w, qtype).T
    if bias is not None:
        ref = ref + bias.astype(np.float64)
    if base is not None:
        ref = ref + base.astype(np.float64)
    nb = K_ // 32
    tol = (nb + 12) * EPS32 * error_scale(xq, w, qtype)
    if bias is not None or base is not None:  # one more fp32 addition each
        tol += 2 * EPS32 * np.abs(ref) + 1e-30
    err = np.abs(np.asarray(ours, dtype=np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"error {err[worst]:.3e} > tolerance {tol[worst]:.3e} at {worst}"


KS = {"q8_0": [32, 96, 256, 1024], "q4_0": [32, 96, 256, 1024], "q4_k": [256, 768, 1024]}
CASES = [(qt, k) for qt in KS for k in KS[qt]]


def test_isas_and_kernel_tables():
    assert "scalar" in ISAS
    feats = K.cpu_features()
    if feats["avx512vnni"] and "avx512" in ISAS:
        assert "avx512vnni" in ISAS
    if not feats["avxvnni"]:
        assert "avxvnni" not in ISAS
    if not feats["neon_dotprod"]:
        assert "neon_dotprod" not in ISAS
    if not feats["amx"]:
        assert "amx" not in ISAS
    before = K.active_isa()
    try:
        for isa in ISAS:
            K.set_isa(isa)
            # the integer-dot levels run their own kernels; avx512 without VNNI the 256-bit ones;
            # amx adds tile kernels for the repacked layout only
            want = {"avx512": "avx2", "amx": "avx512vnni"}.get(isa, isa)
            assert K.q_kernels() == want
            if isa == "amx":
                assert K.qp_kernels() == "amx"
    finally:
        K.set_isa(before)


@pytest.mark.parametrize("qtype,K_", CASES)
@pytest.mark.parametrize("M", [1, 2, 3, 5, 17])
def test_matmul_q_against_gguf(isa, qtype, K_, M):
    N = 13
    w = make_weights(qtype, N, K_, seed=K_ + M)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    check(K.matmul_q(x, w, qtype, K_), x, w, qtype)


@pytest.mark.parametrize("qtype", list(KS))
@pytest.mark.parametrize("N", [1, 7, 33])
def test_bias_and_accumulate(isa, qtype, N):
    K_ = 512
    w = make_weights(qtype, N, K_, seed=N)
    x = (rng.standard_normal((3, K_)) * 5).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    check(K.matmul_q(x, w, qtype, K_, bias), x, w, qtype, bias=bias)
    base = rng.standard_normal((3, N)).astype(np.float32)
    out = base.copy()
    assert K.matmul_q(x, w, qtype, K_, bias, out=out, accumulate=True) is out
    check(out, x, w, qtype, bias=bias, base=base)


def test_zero_and_sparse_activations(isa):
    """All-zero blocks (dx = 0) contribute nothing; the other blocks still count."""
    K_ = 256
    w = make_weights("q4_0", 9, K_)
    x = rng.standard_normal((2, K_)).astype(np.float32)
    x[0] = 0.0
    x[1, 32:96] = 0.0
    out = K.matmul_q(x, w, "q4_0", K_)
    assert np.all(out[0] == 0.0)
    check(out, x, w, "q4_0")


@pytest.mark.parametrize("qtype", list(KS))
def test_rows_do_not_depend_on_m_or_threads(isa, qtype, two_threads):
    """Streaming == offline: a row's result is bit-identical whether it comes
    alone (M=1 GEMV), in a chunk, or in one large call, on 1 or 2 threads."""
    K_, N, M = 1024, 70, 37
    w = make_weights(qtype, N, K_, seed=7)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    whole = K.matmul_q(x, w, qtype, K_)
    for i in (0, 5, 36):
        assert np.array_equal(K.matmul_q(x[i : i + 1], w, qtype, K_), whole[i : i + 1])
    chunks = np.concatenate([K.matmul_q(x[a:b], w, qtype, K_) for a, b in ((0, 3), (3, 8), (8, 29), (29, 37))])
    assert np.array_equal(chunks, whole)
    K.set_num_threads(1)
    assert np.array_equal(K.matmul_q(x, w, qtype, K_), whole)


def test_large_shape_threaded(isa, two_threads):
    """Enough work for the parallel path and several tasks in both directions."""
    K_, N, M = 2048, 301, 70
    w = make_weights("q8_0", N, K_, seed=3)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    out = K.matmul_q(x, w, "q8_0", K_)
    check(out, x, w, "q8_0")
    K.set_num_threads(1)
    assert np.array_equal(K.matmul_q(x, w, "q8_0", K_), out)


@pytest.mark.parametrize("qtype", list(KS))
def test_non_finite_scales_do_not_crash(isa, qtype):
    """inf/NaN fp16 scales (any bytes may come from a file) give non-finite
    outputs for their rows only; other rows are unaffected."""
    K_ = 512
    w = make_weights(qtype, 6, K_, seed=11)
    per = BLOCK[qtype][1]
    bad = w.copy()
    bad[1].reshape(-1, per)[0, 0:2] = _f16_bytes([np.inf])[0]
    bad[3].reshape(-1, per)[1, 0:2] = _f16_bytes([np.nan])[0]
    if qtype == "q4_k":
        bad[4].reshape(-1, per)[0, 2:4] = _f16_bytes([-np.inf])[0]
    x = rng.standard_normal((2, K_)).astype(np.float32)
    out = K.matmul_q(x, bad, qtype, K_)
    assert not np.isfinite(out[:, 1]).any() and not np.isfinite(out[:, 3]).any()
    good = [0, 2, 5]
    check(out[:, good], x, w[good], qtype)


def test_non_finite_activations_do_not_crash(isa):
    K_ = 256
    w = make_weights("q8_0", 5, K_)
    x = rng.standard_normal((3, K_)).astype(np.float32)
    x[0, 3], x[1, 200] = np.nan, np.inf
    out = K.matmul_q(x, w, "q8_0", K_)
    assert np.isnan(out[0]).all() and np.isnan(out[1]).all()
    check(out[2:], x[2:], w, "q8_0")


def test_linear_dispatches_quant_matrices():
    K_, N = 256, 9
    w = make_weights("q4_k", N, K_)
    qm = QuantMatrix("q4_k", w, N, K_)
    x = rng.standard_normal((2, K_)).astype(np.float32)
    assert np.array_equal(linear(x, qm), K.matmul_q(x, w, "q4_k", K_))


def test_bad_arguments_raise():
    K_ = 64
    w = make_weights("q8_0", 4, K_)
    x = np.ones((2, K_), np.float32)
    with pytest.raises(ValueError, match="unknown quantization"):
        K.matmul_q(x, w, "q5_1", K_)
    with pytest.raises(TypeError):
        K.matmul_q(x.astype(np.float64), w, "q8_0", K_)
    with pytest.raises(TypeError):
        K.matmul_q(x, w.view(np.int8), "q8_0", K_)
    with pytest.raises(TypeError):
        K.matmul_q(list(x), w, "q8_0", K_)
    with pytest.raises(ValueError, match="contiguous"):
        K.matmul_q(np.ones((2, 2 * K_), np.float32)[:, ::2], w, "q8_0", K_)
    with pytest.raises(ValueError, match="contiguous"):
        K.matmul_q(x, np.ascontiguousarray(np.concatenate([w, w], axis=1))[:, : w.shape[1]], "q8_0", K_)
    with pytest.raises(ValueError, match="multiple"):
        K.matmul_q(np.ones((2, 48), np.float32), w, "q8_0", 48)
    with pytest.raises(ValueError, match="multiple"):
        K.matmul_q(x, w, "q4_k", K_)  # q4_k needs K % 256 == 0
    with pytest.raises(ValueError):
        K.matmul_q(x, w, "q8_0", 2 * K_)  # K disagrees with x
    with pytest.raises(ValueError, match="bytes"):
        K.matmul_q(x, w[:, :-2].copy(), "q8_0", K_)
    with pytest.raises(ValueError, match="bytes"):
        K.matmul_q(x, w, "q4_0", K_)  # q8_0 rows are not q4_0 rows
    with pytest.raises(ValueError):
        K.matmul_q(x, w.reshape(-1), "q8_0", K_)
    with pytest.raises(ValueError, match="empty"):
        K.matmul_q(np.ones((0, K_), np.float32), w, "q8_0", K_)
    with pytest.raises(ValueError, match="bias"):
        K.matmul_q(x, w, "q8_0", K_, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="shape"):
        K.matmul_q(x, w, "q8_0", K_, out=np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="accumulate"):
        K.matmul_q(x, w, "q8_0", K_, accumulate=True)
    ro = np.empty((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        K.matmul_q(x, w, "q8_0", K_, out=ro)


def test_read_only_weights_are_accepted():
    """Weights are zero-copy views of a mapped (read-only) file."""
    K_ = 64
    w = make_weights("q4_0", 3, K_)
    w.flags.writeable = False
    x = rng.standard_normal((1, K_)).astype(np.float32)
    check(K.matmul_q(x, w, "q4_0", K_), x, w, "q4_0")


def test_stream_read():
    buf = np.zeros(1 << 16, np.uint8)
    buf[[5, 700, 65535]] = [1, 2, 4]
    # xor of all 64-bit words: bytes 5, 700 and 65535 sit at offsets 5, 4 and 7 of their words
    want = (1 << 40) ^ (2 << 32) ^ (4 << 56)
    assert K.stream_read(buf) == want
    with pytest.raises(ValueError):
        K.stream_read(np.zeros(100, np.uint8))
    with pytest.raises(TypeError):
        K.stream_read(np.zeros(64, np.float32))
