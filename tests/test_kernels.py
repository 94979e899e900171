"""C kernels against float64 numpy references, on every ISA this machine can
run (the others are forced off through set_isa to test the fallbacks), plus
the argument checks that keep bad input away from C."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxtral import _kernels as K

ISAS = K.available_isas()
# Tolerances, as max|ours - ref| / max|ref| against float64 references:
#   matmul/conv (fp32 accumulation over K <= 1283): 2e-6; attention (fp32 dot
#   products + softmax): 1e-5; element-wise, norms, rope, stft, log-mel: 1e-6.
REL = 2e-6


def bf16(a):
    """Round float values to bfloat16 bit patterns (round to nearest even)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f64(w):
    return (w.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def close(ours, ref, rel=REL):
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(1e-30, float(np.abs(ref).max()))
    err = float(np.abs(np.asarray(ours, dtype=np.float64) - ref).max()) / scale
    assert err <= rel, f"relative error {err:.2e} > {rel:.0e}"


rng = np.random.default_rng(1234)


def test_dispatch_reports():
    assert "scalar" in ISAS
    assert K.active_isa() in ISAS
    feats = K.cpu_features()
    if feats["avx2"] and feats["fma"]:
        assert "avx2" in ISAS
    if not feats["avx512f"]:
        assert "avx512" not in ISAS
    with pytest.raises(ValueError):
        K.set_isa("sse9")
    for name in ("avx2", "avx512", "neon"):
        if name not in ISAS:
            with pytest.raises(ValueError, match="not available"):
                K.set_isa(name)


def test_threads():
    before = K.get_num_threads()
    K.set_num_threads(1)
    assert K.get_num_threads() == 1
    with pytest.raises(ValueError):
        K.set_num_threads(0)
    K.set_num_threads(before)


@pytest.mark.parametrize(
    "M,N,K_",
    [
        (1, 1, 1),
        (1, 17, 130),
        (1, 300, 1000),
        (2, 5, 7),
        (3, 1, 130),
        (3, 300, 1000),
        (37, 17, 130),
        (37, 300, 1000),
        (64, 96, 1283),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_bf16(isa, M, N, K_, with_bias):
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = bf16(rng.standard_normal((N, K_)))
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
    ref = x.astype(np.float64) @ bf16_to_f64(w).T + (bias if with_bias else 0)
    close(K.matmul_bf16(x, w, bias), ref)
    prev = rng.standard_normal((M, N), dtype=np.float32)
    out = prev.copy()
    K.matmul_bf16(x, w, bias, out=out, accumulate=True)
    close(out, ref + prev)


def test_matmul_rows_do_not_depend_on_batching(isa):
    """A row's result is the same bits whatever M it was computed in: the
    basis of exact streaming (any chunking gives the offline tokens)."""
    x = rng.standard_normal((41, 1280), dtype=np.float32)
    w = bf16(rng.standard_normal((70, 1280)))
    full = K.matmul_bf16(x, w)
    for step in (1, 2, 3, 4, 5):
        parts = np.concatenate([K.matmul_bf16(np.ascontiguousarray(x[i : i + step]), w) for i in range(0, 41, step)])
        np.testing.assert_array_equal(parts, full)


def ref_attention(q, k, v, q_pos0, k_pos0, window, scale):
    M, Hq, D = q.shape
    T, Hkv, _ = k.shape
    out = np.zeros((M, Hq, D))
    for i in range(M):
        qpos = q_pos0 + i
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            vis = [j for j in range(T) if k_pos0 + j <= qpos and qpos - (k_pos0 + j) < window]
            if not vis:
                continue
            s = np.array([q[i, h].astype(np.float64) @ k[j, kh] for j in vis]) * scale
            p = np.exp(s - s.max())
            p /= p.sum()
            out[i, h] = sum(pj * v[j, kh].astype(np.float64) for pj, j in zip(p, vis, strict=True))
    return out


@pytest.mark.parametrize(
    "M,Hq,Hkv,D,T,q_pos0,k_pos0,window",
    [
        (1, 4, 2, 32, 20, 19, 0, 8192),
        (5, 4, 4, 64, 9, 4, 0, 3),
        (3, 8, 2, 128, 50, 100, 60, 30),
        (2, 2, 1, 16, 4, 0, 0, 5),
        (2, 12, 2, 24, 37, 40, 5, 30),
        (1, 6, 3, 12, 11, 10, 0, 100),
        (4, 32, 8, 128, 300, 299, 0, 8192),
    ],
)
def test_attention(isa, M, Hq, Hkv, D, T, q_pos0, k_pos0, window):
    q = rng.standard_normal((M, Hq, D), dtype=np.float32)
    k = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    v = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    out = np.empty_like(q)
    K.attention(q, k, v, out, q_pos0, k_pos0, window, 1 / math.sqrt(D))
    close(out, ref_attention(q, k, v, q_pos0, k_pos0, window, 1 / math.sqrt(D)), rel=1e-5)


def test_attention_large_scores(isa):
    """Peaked softmax (score gaps of hundreds): max-subtraction keeps it finite."""
    q = rng.standard_normal((2, 4, 32), dtype=np.float32) * 10
    k = rng.standard_normal((45, 2, 32), dtype=np.float32) * 10
    v = rng.standard_normal((45, 2, 32), dtype=np.float32)
    out = np.empty_like(q)
    K.attention(q, k, v, out, 44, 0, 100, 1.0)
    close(out, ref_attention(q, k, v, 44, 0, 100, 1.0), rel=1e-5)


def test_attention_does_not_depend_on_threads_or_batching(isa):
    """Same bits whatever the thread count (KV-head blocking) or query batching."""
    q = rng.standard_normal((3, 32, 128), dtype=np.float32)
    k = rng.standard_normal((301, 8, 128), dtype=np.float32)
    v = rng.standard_normal((301, 8, 128), dtype=np.float32)
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        one = K.attention(q, k, v, np.empty_like(q), 298, 0, 250, 0.088)
        K.set_num_threads(2)
        two = K.attention(q, k, v, np.empty_like(q), 298, 0, 250, 0.088)
        rows = [K.attention(q[i : i + 1].copy(), k, v, np.empty_like(q[:1]), 298 + i, 0, 250, 0.088) for i in range(3)]
    finally:
        K.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, np.concatenate(rows))


@pytest.mark.parametrize("group", [1, 4])
def test_attention_positions_sharing_a_task_do_not_change_each_other(isa, group):
    """Positions are attended in groups that read each K/V row once: a group
    mixes positions whose windows start and end at different rows, and ones
    that see no row at all (keys in their future). Each still gets the bits it
    gets alone, and the reference's values."""
    M, Hkv, D, T, k_pos0, window = 11, 3, 24, 40, 5, 17
    q_pos0 = k_pos0 - 3  # the first 3 positions see nothing
    q = rng.standard_normal((M, Hkv * group, D), dtype=np.float32)
    k = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    v = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    together = K.attention(q, k, v, np.empty_like(q), q_pos0, k_pos0, window, 0.2)
    alone = [
        K.attention(q[i : i + 1].copy(), k, v, np.empty_like(q[:1]), q_pos0 + i, k_pos0, window, 0.2) for i in range(M)
    ]
    np.testing.assert_array_equal(together, np.concatenate(alone))
    assert not together[:3].any()
    close(together, ref_attention(q, k, v, q_pos0, k_pos0, window, 0.2), rel=1e-5)


def test_attention_with_no_visible_key_gives_zeros(isa):
    q = rng.standard_normal((2, 2, 8), dtype=np.float32)
    k = rng.standard_normal((3, 2, 8), dtype=np.float32)
    out = np.full_like(q, 7.0)
    K.attention(q, k, k, out, 0, 10, 4, 1.0)  # keys are all in the future
    assert not out.any()


def test_elementwise_kernels(isa):
    from scipy.special import erf

    x = rng.standard_normal((7, 333), dtype=np.float32) * 3
    close(K.gelu(x), 0.5 * x * (1 + erf(x.astype(np.float64) / math.sqrt(2))), rel=1e-6)
    u = rng.standard_normal(x.shape, dtype=np.float32)
    g = x.astype(np.float64)
    close(K.silu_mul(x, u), g / (1 + np.exp(-g)) * u, rel=1e-6)
    w = rng.standard_normal(333).astype(np.float32)
    ref = g / np.sqrt((g**2).mean(-1, keepdims=True) + 1e-5) * w
    close(K.rms_norm(x, w, 1e-5), ref, rel=1e-6)


@pytest.mark.parametrize("interleaved", [True, False])
def test_rope(interleaved):
    x = rng.standard_normal((3, 4, 16), dtype=np.float32)
    ang = rng.uniform(-10, 10, (3, 8)).astype(np.float32)
    c, s = np.cos(ang), np.sin(ang)
    ref = x.astype(np.float64).copy()
    a, b = (ref[..., 0::2], ref[..., 1::2]) if interleaved else (ref[..., :8], ref[..., 8:])
    a2 = a * c[:, None] - b * s[:, None]
    b2 = a * s[:, None] + b * c[:, None]
    if interleaved:
        ref[..., 0::2], ref[..., 1::2] = a2, b2
    else:
        ref[..., :8], ref[..., 8:] = a2, b2
    K.rope(x, c, s, interleaved)
    close(x, ref, rel=1e-6)


def test_conv1d(isa):
    x = rng.standard_normal((23, 12), dtype=np.float32)
    w = bf16(rng.standard_normal((10, 12, 3)))
    b = rng.standard_normal(10).astype(np.float32)
    wf = bf16_to_f64(w)
    for stride in (1, 2):
        T = (23 - 3) // stride + 1
        ref = np.array([[b[o] + (wf[o] * x[t * stride : t * stride + 3].T).sum() for o in range(10)] for t in range(T)])
        close(K.conv1d_bf16(x, w, b, stride), ref)


@pytest.mark.parametrize("n_fft", [400, 512, 30, 7, 9, 6, 11, 400])
def test_stft_power(n_fft):
    sig = rng.standard_normal(n_fft * 4, dtype=np.float32)
    win = np.hanning(n_fft).astype(np.float32)
    hop = max(1, n_fft // 3)
    n_frames = (len(sig) - n_fft) // hop + 1
    frames = np.stack([sig[f * hop : f * hop + n_fft] for f in range(n_frames)]).astype(np.float64) * win
    ref = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    close(K.stft_power(sig, win, hop, n_frames), ref, rel=1e-6)


def test_log_mel():
    p = rng.uniform(0, 10, (5, 201)).astype(np.float32)
    p[0] = 0  # exercises the 1e-10 clamp and the floor
    f = rng.uniform(0, 0.01, (201, 128)).astype(np.float32)
    ref = (np.maximum(np.log10(np.maximum(p.astype(np.float64) @ f, 1e-10)), -6.5) + 4) / 4
    close(K.log_mel(p, f, -6.5), ref, rel=1e-6)


def test_bad_arguments_are_rejected_before_c():
    x = np.zeros((2, 8), np.float32)
    w = np.zeros((4, 8), np.uint16)
    with pytest.raises(TypeError):
        K.matmul_bf16(x.astype(np.float64), w)
    with pytest.raises(TypeError):
        K.matmul_bf16(x, w.astype(np.int16))
    with pytest.raises(ValueError, match="inner dimensions"):
        K.matmul_bf16(x, np.zeros((4, 9), np.uint16))
    with pytest.raises(ValueError, match="contiguous"):
        K.matmul_bf16(np.zeros((8, 2), np.float32).T, w)
    with pytest.raises(ValueError, match="shape"):
        K.matmul_bf16(x, w, out=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((2, 4), np.float32)
        ro.flags.writeable = False
        K.matmul_bf16(x, w, out=ro)
    with pytest.raises(ValueError, match="bias"):
        K.matmul_bf16(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="accumulate"):
        K.matmul_bf16(x, w, accumulate=True)
    with pytest.raises(TypeError):
        K.matmul_bf16([[1.0]], w)
    q = np.zeros((1, 3, 4), np.float32)
    kv = np.zeros((2, 2, 4), np.float32)
    with pytest.raises(ValueError, match="multiple"):
        K.attention(q, kv, kv, np.zeros_like(q), 0, 0, 4, 1.0)
    with pytest.raises(ValueError, match="too short"):
        K.stft_power(np.zeros(100, np.float32), np.ones(400, np.float32), 160, 1)
    with pytest.raises(ValueError, match="fewer than the kernel"):
        K.conv1d_bf16(np.zeros((2, 4), np.float32), np.zeros((3, 4, 3), np.uint16), None, 1)
    with pytest.raises(ValueError, match="even"):
        K.rope(np.zeros((1, 1, 3), np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), True)


def test_read_only_inputs_are_accepted():
    """Weights are read-only views of an mmap: inputs may be read-only."""
    x = rng.standard_normal((2, 16), dtype=np.float32)
    w = bf16(rng.standard_normal((3, 16)))
    w.flags.writeable = False
    x.flags.writeable = False
    close(K.matmul_bf16(x, w), x.astype(np.float64) @ bf16_to_f64(w).T)


def test_environment_caps_isa_and_threads():
    import os
    import subprocess
    import sys

    code = "import voxtral._kernels as k; print(k.active_isa(), k.get_num_threads())"
    env = dict(os.environ, VOXTRAL_ISA="scalar", VOXTRAL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["scalar", "1"]
    env = dict(os.environ, VOXTRAL_NUM_THREADS="zero")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    # a bad value warns and falls back to the default: it must not break the import
    assert r.returncode == 0 and "VOXTRAL_NUM_THREADS" in r.stderr and "Traceback" not in r.stderr
