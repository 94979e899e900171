"""Compact (bf16 / int8) KV cache: the store kernel against numpy's rounding
and quantization (bit-exact), attention over compact rows against a float64
reference that reads the same rounded / quantized values (every ISA this
machine runs), the cache's compaction with its scales, bounded memory, and
the argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxtral import _kernels as K
from voxtral.errors import UsageError
from voxtral.kvcache import KVCache

ISAS = K.available_isas()
# Attention over compact rows against float64 on the same dequantized rows:
# the only differences are fp32 dot products / softmax (as for fp32 attention,
# tests/test_kernels.py), so the same tolerance: max|ours - ref| / max|ref| <= 1e-5.
REL = 1e-5

rng = np.random.default_rng(99)


# ---- independent numpy references ----------------------------------------------------


def np_bf16(x):
    """Round-to-nearest-even bfloat16 bits of float32 x (finite values)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def np_int8(x):
    """Symmetric int8 per (row, head) of x[..., D]: (q, scale), scale = amax / 127."""
    x = np.asarray(x, dtype=np.float32)
    scale = (np.abs(x).max(axis=-1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.where(scale[..., None] > 0, np.rint(x / safe[..., None]), 0)
    return q.astype(np.int8), scale


def dequant(kind, x):
    """float64 values a compact cache holds for fp32 rows x[T, H, D]."""
    if kind == "bf16":
        return (np_bf16(x).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    q, s = np_int8(x)
    return q.astype(np.float64) * s[..., None].astype(np.float64)


def ref_attention(q, k, v, q_pos0, k_pos0, window, scale):
    M, Hq, D = q.shape
    T, Hkv, _ = k.shape
    out = np.zeros((M, Hq, D))
    for i in range(M):
        qpos = q_pos0 + i
        vis = [j for j in range(T) if k_pos0 + j <= qpos and qpos - (k_pos0 + j) < window]
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            if not vis:
                continue
            s = np.array([q[i, h].astype(np.float64) @ k[j, kh] for j in vis]) * scale
            p = np.exp(s - s.max())
            p /= p.sum()
            out[i, h] = sum(pj * v[j, kh] for pj, j in zip(p, vis, strict=True))
    return out


def compact(kind, x):
    """Our store kernel's output for fp32 rows x[T, H, D]: (rows, scales or None)."""
    if kind == "bf16":
        dst = np.empty(x.shape, np.uint16)
        K.kv_store(x, dst)
        return dst, None
    dst = np.empty(x.shape, np.int8)
    scales = np.empty(x.shape[:2], np.float32)
    K.kv_store(x, dst, scales)
    return dst, scales


def close(ours, ref, rel=REL):
    scale = max(1e-30, float(np.abs(ref).max()))
    err = float(np.abs(ours.astype(np.float64) - ref).max()) / scale
    assert err <= rel, f"relative error {err:.2e} > {rel:.0e}"


# ---- store -----------------------------------------------------------------------------


def test_store_bf16_rounds_to_nearest_even():
    x = rng.standard_normal((7, 3, 40), dtype=np.float32) * 100
    # exact ties and values next to them: ties go to the even mantissa
    x[0, 0, :4] = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF], np.uint32).view(np.float32)
    x[0, 1, :3] = [0.0, -0.0, np.inf]
    dst, _ = compact("bf16", x)
    np.testing.assert_array_equal(dst, np_bf16(x))
    assert list(dst[0, 0, :4]) == [0x3F80, 0x3F82, 0x3F81, 0x3F80]
    nan = np.full((1, 1, 8), np.nan, np.float32)
    out, _ = compact("bf16", nan)
    assert np.isnan((out.astype(np.uint32) << 16).view(np.float32)).all()


@pytest.mark.parametrize("D", [16, 24, 32, 64, 128])  # 32 | D: the SIMD store; else the scalar one
def test_store_int8_matches_numpy(isa, D):
    x = rng.standard_normal((9, 4, D), dtype=np.float32) * rng.uniform(0.01, 50, (9, 4, 1)).astype(np.float32)
    x[3, 2] = 0.0  # an all-zero head: scale 0, zeros
    x[5, 1, : D // 2] = np.arange(D // 2, dtype=np.float32) - D / 4 + 0.5  # halves: ties round to even
    x[5, 1, D // 2] = 127.0  # (the scale is then exactly 1)
    q, s = compact("int8", x)
    q_ref, s_ref = np_int8(x)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q, q_ref)
    assert s[3, 2] == 0 and not q[3, 2].any()
    assert np.abs(q).max() == 127
    # dequantized error is at most half a step per element
    err = np.abs(q * s[..., None] - x)
    assert (err <= s[..., None] * 0.5 * (1 + 1e-6)).all()


def test_store_int8_nan_values_store_zero(isa):
    """A NaN among finite values stores 0 and leaves the row's scale to the
    others; every level writes the same bytes."""
    x = rng.standard_normal((3, 2, 64), dtype=np.float32)
    x[1, 0, 7] = np.nan
    q, s = compact("int8", x)
    assert q[1, 0, 7] == 0
    finite = np.where(np.isnan(x), 0, x)
    q_ref, s_ref = np_int8(finite)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q, q_ref)


def test_store_int8_non_finite_rows_do_not_crash():
    x = np.ones((2, 1, 16), np.float32)
    x[0, 0, 3] = np.inf
    x[1, 0, 5] = np.nan
    q, s = compact("int8", x)
    assert q.dtype == np.int8 and s.shape == (2, 1)


# ---- attention -------------------------------------------------------------------------

SHAPES = [
    (1, 4, 2, 32, 20, 19, 0, 8192),
    (5, 4, 4, 64, 9, 4, 0, 3),
    (3, 8, 2, 128, 50, 100, 60, 30),
    (2, 2, 1, 16, 4, 0, 0, 5),
    (2, 12, 2, 24, 37, 40, 5, 30),
    (1, 6, 3, 16, 11, 10, 0, 100),
    (4, 32, 8, 128, 301, 300, 0, 8192),
    (2, 32, 8, 128, 70, 69, 0, 4),
    (3, 4, 1, 8, 1, 0, 0, 1),
]


@pytest.mark.parametrize("kind", ["bf16", "int8"])
@pytest.mark.parametrize("M,Hq,Hkv,D,T,q_pos0,k_pos0,window", SHAPES)
def test_attention_kv(isa, kind, M, Hq, Hkv, D, T, q_pos0, k_pos0, window):
    q = rng.standard_normal((M, Hq, D), dtype=np.float32)
    k = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    v = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    (kc, ks), (vc, vs) = compact(kind, k), compact(kind, v)
    out = K.attention_kv(q, kc, vc, ks, vs, np.empty_like(q), q_pos0, k_pos0, window, 1 / math.sqrt(D))
    ref = ref_attention(q, dequant(kind, k), dequant(kind, v), q_pos0, k_pos0, window, 1 / math.sqrt(D))
    close(out, ref)


@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_attention_kv_large_scores(isa, kind):
    """Peaked softmax (score gaps of hundreds): max-subtraction keeps it finite."""
    q = rng.standard_normal((2, 4, 32), dtype=np.float32) * 10
    k = rng.standard_normal((45, 2, 32), dtype=np.float32) * 10
    v = rng.standard_normal((45, 2, 32), dtype=np.float32)
    (kc, ks), (vc, vs) = compact(kind, k), compact(kind, v)
    out = K.attention_kv(q, kc, vc, ks, vs, np.empty_like(q), 44, 0, 100, 1.0)
    # Scores here reach ~1e3, where fp32 rounds them by ~1e-4 (absolute) and
    # the softmax weights of the runners-up by as much (relative): a looser
    # bound than the unit-scale tests' 1e-5 (avx2 int8 measured 1.06e-5).
    close(out, ref_attention(q, dequant(kind, k), dequant(kind, v), 44, 0, 100, 1.0), rel=5e-5)


@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_attention_kv_does_not_depend_on_threads_or_batching(isa, kind):
    """Same bits whatever the thread count (KV-head blocking) or query batching."""
    q = rng.standard_normal((3, 32, 128), dtype=np.float32)
    (kc, ks), (vc, vs) = (compact(kind, rng.standard_normal((301, 8, 128), dtype=np.float32)) for _ in range(2))
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        one = K.attention_kv(q, kc, vc, ks, vs, np.empty_like(q), 298, 0, 250, 0.088)
        K.set_num_threads(2)
        two = K.attention_kv(q, kc, vc, ks, vs, np.empty_like(q), 298, 0, 250, 0.088)
        rows = [
            K.attention_kv(q[i : i + 1].copy(), kc, vc, ks, vs, np.empty_like(q[:1]), 298 + i, 0, 250, 0.088)
            for i in range(3)
        ]
    finally:
        K.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, np.concatenate(rows))


@pytest.mark.parametrize("kind", ["bf16", "int8"])
@pytest.mark.parametrize("group,D", [(1, 64), (4, 24)])
def test_attention_kv_positions_sharing_a_task_do_not_change_each_other(isa, kind, group, D):
    """Positions are attended in groups that read each row once: a group mixes
    positions whose windows start and end at different rows, and ones that
    see no row at all (keys in their future). Each still gets the bits it
    gets alone, and the reference's values."""
    M, Hkv, T, k_pos0, window = 11, 3, 40, 5, 17
    q_pos0 = k_pos0 - 3  # the first 3 positions see nothing
    q = rng.standard_normal((M, Hkv * group, D), dtype=np.float32)
    k, v = (rng.standard_normal((T, Hkv, D), dtype=np.float32) for _ in range(2))
    (kc, ks), (vc, vs) = compact(kind, k), compact(kind, v)
    together = K.attention_kv(q, kc, vc, ks, vs, np.empty_like(q), q_pos0, k_pos0, window, 0.2)
    alone = [
        K.attention_kv(q[i : i + 1].copy(), kc, vc, ks, vs, np.empty_like(q[:1]), q_pos0 + i, k_pos0, window, 0.2)
        for i in range(M)
    ]
    np.testing.assert_array_equal(together, np.concatenate(alone))
    assert not together[:3].any()
    close(together, ref_attention(q, dequant(kind, k), dequant(kind, v), q_pos0, k_pos0, window, 0.2))


@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_attention_kv_with_no_visible_key_gives_zeros(isa, kind):
    q = rng.standard_normal((2, 2, 8), dtype=np.float32)
    kc, ks = compact(kind, rng.standard_normal((3, 2, 8), dtype=np.float32))
    out = np.full_like(q, 7.0)
    K.attention_kv(q, kc, kc, ks, ks, out, 0, 10, 4, 1.0)  # keys are all in the future
    assert not out.any()
    empty = (np.empty((0, 2, 8), kc.dtype), None if ks is None else np.empty((0, 2), np.float32))
    K.attention_kv(q, empty[0], empty[0], empty[1], empty[1], out, 0, 0, 4, 1.0)  # an empty cache
    assert not out.any()


def test_attention_kv_argument_checks():
    q = np.zeros((1, 4, 16), np.float32)
    kb = np.zeros((5, 2, 16), np.uint16)
    ki = np.zeros((5, 2, 16), np.int8)
    s = np.ones((5, 2), np.float32)
    out = np.empty_like(q)
    with pytest.raises(TypeError):
        K.attention_kv(q, np.zeros((5, 2, 16), np.float32), kb, None, None, out, 4, 0, 8, 1.0)
    with pytest.raises(TypeError):
        K.attention_kv(q, kb, ki, None, None, out, 4, 0, 8, 1.0)  # mixed dtypes
    with pytest.raises(ValueError):
        K.attention_kv(q, ki, ki, None, None, out, 4, 0, 8, 1.0)  # int8 without scales
    with pytest.raises(ValueError):
        K.attention_kv(q, ki, ki, s[:4], s, out, 4, 0, 8, 1.0)  # scales of the wrong length
    with pytest.raises(TypeError):
        K.attention_kv(q, ki, ki, s.astype(np.float64), s, out, 4, 0, 8, 1.0)
    with pytest.raises(ValueError):
        K.attention_kv(q, kb, kb, s, s, out, 4, 0, 8, 1.0)  # bf16 has no scales
    with pytest.raises(ValueError):
        K.attention_kv(q, kb[:, :, :8].copy(), kb[:, :, :8].copy(), None, None, out, 4, 0, 8, 1.0)
    with pytest.raises(ValueError):
        K.attention_kv(q, kb[:, :, ::2], kb[:, :, ::2], None, None, out, 4, 0, 8, 1.0)  # not contiguous
    with pytest.raises(ValueError):
        K.attention_kv(
            np.zeros((1, 3, 16), np.float32), kb, kb, None, None, np.empty((1, 3, 16), np.float32), 4, 0, 8, 1.0
        )  # 3 query heads over 2 kv heads
    with pytest.raises(ValueError):
        K.attention_kv(q, kb, kb, None, None, out, 4, 0, 0, 1.0)  # window 0
    with pytest.raises(ValueError):
        K.attention_kv(q, kb, kb, None, None, out, -1, 0, 8, 1.0)


def test_kv_store_argument_checks():
    src = np.zeros((3, 2, 8), np.float32)
    with pytest.raises(TypeError):
        K.kv_store(src, np.zeros((3, 2, 8), np.float32))
    with pytest.raises(ValueError):
        K.kv_store(src, np.zeros((3, 2, 4), np.uint16))
    with pytest.raises(ValueError):
        K.kv_store(src, np.zeros((3, 2, 8), np.int8))  # no scales
    with pytest.raises(ValueError):
        K.kv_store(src, np.zeros((3, 2, 8), np.int8), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        K.kv_store(src, np.zeros((3, 2, 8), np.uint16), np.zeros((3, 2), np.float32))
    ro = np.zeros((3, 2, 8), np.uint16)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        K.kv_store(src, ro)
    with pytest.raises(TypeError):
        K.kv_store(src.astype(np.float64), np.zeros((3, 2, 8), np.uint16))


# ---- the cache -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["f32", "bf16", "int8"])
def test_compaction_moves_rows_and_scales(kind):
    """Past the window, old rows are dropped with their scales; what remains
    (rows, scales, positions) is what was written, and attention over the
    compacted cache equals the float64 reference over the visible rows."""
    L, H, D, window = 2, 2, 16, 6
    cache = KVCache(L, H * D, window, initial_rows=4, dtype=kind, n_kv_heads=H)
    written_k, written_v = [], []
    for step in range(30):
        n = 1 + step % 3
        cache.reserve(n)
        k_new = rng.standard_normal((n, H * D), dtype=np.float32) * (1 + step)
        v_new = rng.standard_normal((n, H * D), dtype=np.float32)
        for layer in range(L):
            if cache.compact:
                cache.store(layer, k_new, v_new)
            else:
                ks, vs = cache.slots(layer, n)
                ks[:], vs[:] = k_new, v_new
        cache.commit(n)
        written_k.append(k_new)
        written_v.append(v_new)
    assert cache.compactions > 0 and cache.pos0 > 0
    all_k = np.concatenate(written_k).reshape(-1, H, D)
    all_v = np.concatenate(written_v).reshape(-1, H, D)
    assert cache.next_pos == all_k.shape[0]
    keep_k, keep_v = all_k[cache.pos0 :], all_v[cache.pos0 :]
    for layer in range(L):
        keys, values = (a.reshape(-1, H, D) for a in cache.keys_values(layer, 0))
        k_scale, v_scale = cache.scales(layer, 0)
        if kind == "f32":
            np.testing.assert_array_equal(keys, keep_k)
            assert k_scale is None
            continue
        ref_k, ref_ks = compact(kind, keep_k)
        np.testing.assert_array_equal(keys, ref_k)
        if kind == "int8":
            np.testing.assert_array_equal(k_scale, ref_ks)
            np.testing.assert_array_equal(v_scale, np_int8(keep_v)[1])
        q = rng.standard_normal((1, 4, D), dtype=np.float32)
        out = K.attention_kv(
            q, keys, values, k_scale, v_scale, np.empty_like(q), cache.next_pos - 1, cache.pos0, window, 0.25
        )
        ref = ref_attention(q, dequant(kind, all_k), dequant(kind, all_v), cache.next_pos - 1, 0, window, 0.25)
        close(out, ref)


@pytest.mark.parametrize("kind,bytes_per_value", [("f32", 4), ("bf16", 2), ("int8", 1)])
def test_memory_is_bounded_and_compact(kind, bytes_per_value):
    L, H, D, window = 3, 4, 32, 64
    cache = KVCache(L, H * D, window, initial_rows=8, dtype=kind, n_kv_heads=H)
    caps = []
    for _ in range(500):
        cache.reserve(1)
        for layer in range(L):
            if cache.compact:
                cache.store(layer, np.ones((1, H * D), np.float32), np.ones((1, H * D), np.float32))
        cache.commit(1)
        caps.append(cache.capacity)
    assert max(caps) <= window - 1 + 1 + cache.slack
    scale_bytes = 2 * L * cache.capacity * H * 4 if kind == "int8" else 0
    assert cache.nbytes == 2 * L * cache.capacity * H * D * bytes_per_value + scale_bytes


def test_cache_argument_checks():
    with pytest.raises(UsageError):
        KVCache(1, 16, 8, dtype="fp16")
    with pytest.raises(UsageError):
        KVCache(1, 16, 8, dtype="int8", n_kv_heads=3)
    with pytest.raises(TypeError):
        KVCache(1, 16, 8, dtype="bf16", n_kv_heads=2).slots(0, 1)


def test_every_isa_level_runs_its_own_kernel(isa):
    """Each x86 level uses the widest compact-KV kernel it allows (the VNNI
    levels only change the integer matmul kernels): never the scalar
    fallback by accident."""
    want = {"avxvnni": "avx2", "avx512vnni": "avx512", "amx": "avx512"}.get(isa, isa)
    assert K.kv_kernels() == want
