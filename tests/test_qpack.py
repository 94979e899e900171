"""Repacked (interleaved) q4_0 / q8_0 / q4_k weights: the load-time layout
of csrc/qpack.c and the kernels over it (matmul_qp).

- the layout is checked against a numpy construction of the documented
  layout (8 rows per group, the rows' block heads, 4-byte chunks per row),
  and repack/unpack round-trip;
- products against the float64 gguf reference with test_qkernels' stated
  tolerance (weights from the gguf package's quantizer);
- every ISA level's kernel is bit-equal to the scalar kernel over the same
  layout (the oracle: one fma per block per output, in block order; for
  q4_k the GGML-layout scalar kernel's sequence, and bit-equal to it), and
  bit-equal across M, tiles, chunking and thread count;
- the loader's page release keeps a read-only mapping's contents.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_qkernels import check, make_weights
from voxtral import _kernels as K
from voxtral.linear import linear
from voxtral.qformats import BLOCK, QuantMatrix

QTYPES = ["q4_0", "q8_0", "q4_k"]
HEAD = {"q4_0": 2, "q8_0": 2, "q4_k": 16}  # bytes of a block before its quants
rng = np.random.default_rng(97)


@pytest.fixture
def threads():
    before = K.get_num_threads()
    yield K.set_num_threads
    K.set_num_threads(before)


def numpy_layout(w: np.ndarray, qtype: str) -> np.ndarray:
    """The documented layout, built with numpy from GGML rows."""
    nbytes = BLOCK[qtype][1]
    N, nb = w.shape[0], w.shape[1] // nbytes
    G = -(-N // 8)
    rows = np.zeros((G * 8, nb, nbytes), np.uint8)
    rows[:N] = w.reshape(N, nb, nbytes)
    g = rows.reshape(G, 8, nb, nbytes).transpose(0, 2, 1, 3)  # [G, nb, 8 rows, block]
    h = HEAD[qtype]
    scales = g[..., :h].reshape(G, nb, 8 * h)
    chunks = g[..., h:].reshape(G, nb, 8, -1, 4).transpose(0, 1, 3, 2, 4).reshape(G, nb, -1)
    return np.concatenate([scales, chunks], axis=2).reshape(-1)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("N", [1, 8, 13, 40])
def test_layout_and_round_trip(qtype, N):
    K_ = 512 if qtype == "q4_k" else 96
    w = make_weights(qtype, N, K_, seed=N)
    wp = K.repack_q(w, qtype, K_)
    assert wp.nbytes == -(-N // 8) * 8 * w.shape[1]  # as many bytes per row as the file
    assert np.array_equal(wp, numpy_layout(w, qtype))
    assert np.array_equal(K.unpack_q(wp, qtype, N, K_), w)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("K_", [32, 96, 1024])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 8, 9, 17])
def test_against_gguf_and_scalar(isa, qtype, K_, M):
    if qtype == "q4_k":
        K_ = {32: 256, 96: 768}.get(K_, K_)  # 256-value super-blocks
    N = 21
    w = make_weights(qtype, N, K_, seed=K_ + M)
    wp = K.repack_q(w, qtype, K_)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    ours = K.matmul_qp(x, wp, qtype, N, K_)
    check(ours, x, w, qtype)
    with_bias = K.matmul_qp(x, wp, qtype, N, K_, bias)
    check(with_bias, x, w, qtype, bias=bias)
    base = rng.standard_normal((M, N)).astype(np.float32)
    acc = base.copy()
    K.matmul_qp(x, wp, qtype, N, K_, bias, out=acc, accumulate=True)
    check(acc, x, w, qtype, bias=bias, base=base)
    K.set_isa("scalar")
    try:
        assert np.array_equal(K.matmul_qp(x, wp, qtype, N, K_), ours)
        assert np.array_equal(K.matmul_qp(x, wp, qtype, N, K_, bias), with_bias)
        if qtype == "q4_k":  # the GGML-layout scalar kernel's own sequence
            assert np.array_equal(K.matmul_q(x, w, qtype, K_), ours)
    finally:
        K.set_isa(isa)


@pytest.mark.parametrize("qtype", QTYPES)
def test_bit_equal_across_m_chunks_and_threads(isa, qtype, threads):
    """Streaming == offline: a row's outputs are the same alone (GEMV), in
    small-M calls (every tile height 1..8 the kernels specialise, and tails
    past a full tile), in a chunk or in one large GEMM, on 1 or 2 threads."""
    K_, N, M = 1024, 75, 70
    w = make_weights(qtype, N, K_, seed=5)
    wp = K.repack_q(w, qtype, K_)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    threads(2)
    whole = K.matmul_qp(x, wp, qtype, N, K_)
    for i in (0, 9, 69):
        assert np.array_equal(K.matmul_qp(x[i : i + 1], wp, qtype, N, K_), whole[i : i + 1])
    for step in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16):
        parts = [K.matmul_qp(x[a : a + step], wp, qtype, N, K_) for a in range(0, M, step)]
        assert np.array_equal(np.concatenate(parts), whole)
    threads(1)
    assert np.array_equal(K.matmul_qp(x, wp, qtype, N, K_), whole)


@pytest.mark.parametrize("qtype", QTYPES)
def test_long_tasks_equal_the_scalar_kernel(isa, qtype, threads):
    """Enough rows for the driver's longest tasks (128 rows: the 512-bit
    kernels pair a task's group i with group i + half), a last task of an odd
    number of groups ending in a partial group, on 1, 2 and 3 threads: every
    output equals the scalar kernel's, whichever task and pair it fell in."""
    K_ = 256
    N = 4 * 128 * 2 + 8 * 4 + 3  # tasks of 128 rows at 1 and 2 threads, then 5 groups, the last of 3 rows
    w = make_weights(qtype, N, K_, seed=13)
    wp = K.repack_q(w, qtype, K_)
    x = rng.standard_normal((5, K_)).astype(np.float32)
    K.set_isa("scalar")
    try:
        want = K.matmul_qp(x, wp, qtype, N, K_)
    finally:
        K.set_isa(isa)
    for n in (1, 2, 3):
        threads(n)
        for rows in (slice(0, 1), slice(0, 4), slice(0, 5)):
            assert np.array_equal(K.matmul_qp(x[rows], wp, qtype, N, K_), want[rows])


@pytest.mark.parametrize("M", [1, 5, 70])  # 70: two blocks of x rows, quantized in the threads
def test_many_products_equal_one_call_each(isa, threads, M):
    """matmul_qp_many (x quantized once, every product's tasks in one
    region) gives each product the bits of its own matmul_qp: mixed types,
    sizes that end in partial tasks and groups, biases, 1 to 3 threads."""
    K_ = 256
    shapes = [("q4_0", 200), ("q8_0", 67), ("q4_k", 1029)]
    mats = [(q, n, K.repack_q(make_weights(q, n, K_, seed=20 + i), q, K_)) for i, (q, n) in enumerate(shapes)]
    biases = [rng.standard_normal(n).astype(np.float32) if i != 1 else None for i, (_, n) in enumerate(shapes)]
    x = rng.standard_normal((M, K_)).astype(np.float32)
    want = [K.matmul_qp(x, wp, q, n, K_, b) for (q, n, wp), b in zip(mats, biases, strict=True)]
    for n_threads in (1, 2, 3):
        threads(n_threads)
        got = K.matmul_qp_many(x, [(wp, q, n, b) for (q, n, wp), b in zip(mats, biases, strict=True)])
        for g, w_ in zip(got, want, strict=True):
            assert np.array_equal(g, w_)


def test_many_products_argument_checks():
    K_ = 256
    wp = K.repack_q(make_weights("q4_0", 16, K_, seed=3), "q4_0", K_)
    x = np.ones((2, K_), np.float32)
    with pytest.raises(ValueError, match="1..4 products"):
        K.matmul_qp_many(x, [])
    with pytest.raises(ValueError, match="1..4 products"):
        K.matmul_qp_many(x, [(wp, "q4_0", 16, None)] * 5)
    with pytest.raises(ValueError, match="bytes"):
        K.matmul_qp_many(x, [(wp, "q4_0", 16, None), (wp, "q4_0", 8, None)])
    with pytest.raises(ValueError, match="bias"):
        K.matmul_qp_many(x, [(wp, "q4_0", 16, np.ones(3, np.float32))])
    with pytest.raises(ValueError):
        K.matmul_qp_many(np.ones((2, 128), np.float32), [(wp, "q4_0", 16, None)])


def test_non_finite_inputs(isa):
    K_ = 256
    w = make_weights("q4_0", 9, K_, seed=2)
    bad = w.copy()
    bad[4, 0:2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    x = rng.standard_normal((3, K_)).astype(np.float32)
    x[0, 7] = np.nan
    out = K.matmul_qp(x, K.repack_q(bad, "q4_0", K_), "q4_0", 9, K_)
    assert np.isnan(out[0]).all()
    assert not np.isfinite(out[1:, 4]).any()
    good = [0, 1, 2, 3, 5, 6, 7, 8]
    check(out[1:, good], x[1:], w[good], "q4_0")


def test_linear_uses_the_repacked_copy():
    K_, N = 256, 19
    w = make_weights("q8_0", N, K_, seed=8)
    qm = QuantMatrix("q8_0", w, N, K_)
    packed = qm.repacked()
    x = rng.standard_normal((3, K_)).astype(np.float32)
    if K.qp_kernels() == "scalar":
        assert packed is qm  # no SIMD kernels for the layout here: the GGML ones serve
    else:
        assert packed.packed is not None and np.array_equal(
            linear(x, packed), K.matmul_qp(x, packed.packed, "q8_0", N, K_)
        )
    check(linear(x, packed), x, w, "q8_0")


def test_bad_arguments():
    w = make_weights("q4_0", 8, 64)
    wp = K.repack_q(w, "q4_0", 64)
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="cannot be repacked"):
        K.repack_q(make_weights("q4_0", 8, 64), "q4_k", 64)  # q4_k needs 256-value rows
    with pytest.raises(ValueError, match="bytes"):
        K.repack_q(w, "q4_0", 128)
    with pytest.raises(ValueError, match="bytes"):
        K.matmul_qp(x, wp[:-1].copy(), "q4_0", 8, 64)
    with pytest.raises(ValueError, match="bytes"):
        K.matmul_qp(x, wp, "q4_0", 16, 64)
    with pytest.raises(ValueError):
        K.matmul_qp(np.ones((2, 32), np.float32), wp, "q4_0", 8, 64)
    with pytest.raises(ValueError, match="unknown"):
        K.matmul_qp(x, wp, "q5_1", 8, 64)


def test_drop_file_pages_keeps_contents(tmp_path):
    path = tmp_path / "blob"
    data = rng.integers(0, 256, 3 * 4096 + 100, dtype=np.uint8)
    data.tofile(path)
    view = np.memmap(path, dtype=np.uint8, mode="r")
    first = int(view.sum(dtype=np.int64))
    K.drop_file_pages(view[10:])
    assert np.array_equal(np.asarray(view), data) and int(view.sum(dtype=np.int64)) == first
    with pytest.raises(ValueError, match="read-only"):
        K.drop_file_pages(data)  # anonymous memory would lose its contents


@pytest.mark.parametrize("qtype", QTYPES)
def test_full_tiles_of_sixteen_rows_equal_the_scalar_kernel(isa, qtype, threads):
    """The AMX level runs every full tile of 16 rows of x through tile
    products (a pair of 8-row groups per tile, a lone last group paired with
    itself) and the rows after them through the VNNI kernel; at every level
    each output equals the scalar kernel's, for M of whole tiles, whole tiles
    plus a few rows, and several of the driver's 64-row blocks, on 1-3
    threads."""
    K_ = 768 if qtype == "q4_k" else 416  # 13 blocks: an odd count for the two-block pipeline
    N = 128 + 8 * 3 + 5  # a long task, then 3 groups and a partial one
    w = make_weights(qtype, N, K_, seed=29)
    wp = K.repack_q(w, qtype, K_)
    x = rng.standard_normal((150, K_)).astype(np.float32)
    x[37, 5] = np.nan  # one row's block is NaN, in the middle of a tile: its row only
    K.set_isa("scalar")
    try:
        want = K.matmul_qp(x, wp, qtype, N, K_)
    finally:
        K.set_isa(isa)
    assert np.isnan(want[37]).all() and np.isfinite(np.delete(want, 37, axis=0)).all()
    for n in (1, 2, 3):
        threads(n)
        for M in (16, 19, 32, 64, 150):
            got = K.matmul_qp(x[:M], wp, qtype, N, K_)
            assert np.array_equal(got, want[:M], equal_nan=True), (n, M)
