"""Quantized weights: the GGML block quantizers against the ``gguf`` package's
reference, the GGUF files ``python -m voxtral quantize`` writes (read back
both by our loader and by ``gguf.GGUFReader``), the load(quant=) cache, and a
typed error for every broken file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as GT  # noqa: E402

import voxtral  # noqa: E402
from voxtral import _kernels, gguf_io, qformats, quantize  # noqa: E402
from voxtral.config import from_params_json  # noqa: E402
from voxtral.errors import CheckpointError, ModelFileError, UsageError  # noqa: E402
from voxtral.qformats import QuantMatrix  # noqa: E402
from voxtral.weights import expected_shapes, is_linear_key, load_weights, native_names, weights_by_key  # noqa: E402

GGML = {"q8_0": GT.Q8_0, "q4_0": GT.Q4_0, "q4_k": GT.Q4_K}
needs_matmul_q = pytest.mark.skipif(not hasattr(_kernels, "matmul_q"), reason="needs _kernels.matmul_q (other branch)")


def bf16_to_f32(bits):
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def rel_rms(approx, exact):
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return float(np.sqrt(np.mean((approx - exact) ** 2) / np.mean(exact**2)))


# ---------------------------------------------------------------------------
# Block quantizers


def _edge_cases(per: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    cols = 4 * per
    cases = {"gaussian": rng.standard_normal((33, cols)).astype(np.float32)}
    z = rng.standard_normal((4, cols)).astype(np.float32)
    z[0] = 0
    z[1, :per] = 0
    z[2, per : 2 * per] = -0.0
    cases["zero_blocks"] = z
    neg = np.abs(rng.standard_normal((4, cols)).astype(np.float32))
    neg[:, ::per] = -5.0  # the largest magnitude of every block is negative
    cases["negative_max"] = neg
    tie = rng.standard_normal((4, cols)).astype(np.float32)
    tie[:, ::per] = -4.0  # ...and one positive value just as large
    tie[:, 1::per] = 4.0
    cases["tied_magnitudes"] = tie
    cases["huge"] = (rng.standard_normal((4, cols)) * 3e4).astype(np.float32)
    cases["tiny"] = (rng.standard_normal((4, cols)) * 1e-6).astype(np.float32)
    cases["constant"] = np.full((2, cols), -1.25, dtype=np.float32)
    # Values landing on .5 of the grid: block max 127 (q8_0: d = 1) or -8 (q4_0: d = 1).
    half = np.tile(np.arange(-7, 8, dtype=np.float32) + 0.5, cols // 15 + 1)[:cols].reshape(1, cols)
    for name, top in (("halves_q8", 127.0), ("halves_q4", -8.0)):
        h = np.repeat(half, 2, axis=0).copy()
        h[:, ::per] = top
        cases[name] = h
    # Just below and above .5 after scaling.
    near = np.repeat(half, 2, axis=0).copy()
    near[0] = np.nextafter(near[0], np.float32(0))
    near[1] = np.nextafter(near[1], np.float32(np.inf))
    near[:, ::per] = 127.0
    cases["near_halves"] = near
    return cases


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_q8_0_q4_0_bytes_equal_gguf_reference(qtype):
    for name, x in _edge_cases(32).items():
        ours = qformats.quantize(x, qtype)
        ref = gguf.quants.quantize(x, GGML[qtype])
        assert ours.shape == (x.shape[0], qformats.row_bytes(qtype, x.shape[1]))
        assert ours.dtype == np.uint8
        assert np.array_equal(ours, ref), f"{qtype} {name}: bytes differ from gguf.quants.quantize"
        # and our dequantize reads them as gguf does
        assert np.array_equal(qformats.dequantize(ours, qtype, x.shape[1]), gguf.quants.dequantize(ref, GGML[qtype]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    log_scale=st.floats(-6, 5),
    rows=st.integers(1, 6),
    blocks=st.integers(1, 8),
    heavy=st.booleans(),
)
def test_bytes_equal_gguf_reference_at_any_scale(seed, log_scale, rows, blocks, heavy):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, (rows, 32 * blocks)) if heavy else rng.standard_normal((rows, 32 * blocks))
    x = (x * 10.0**log_scale).astype(np.float32)
    amax = np.abs(x.reshape(-1, 32)).max(axis=1)
    for qtype, top in (("q8_0", 127), ("q4_0", 8)):
        with np.errstate(over="ignore"):
            overflow = np.isinf((amax / np.float32(top)).astype(np.float16)).any()
        if overflow:  # gguf would store an Inf scale; we refuse
            with pytest.raises(ValueError, match="fp16"):
                qformats.quantize(x, qtype)
        else:
            assert np.array_equal(qformats.quantize(x, qtype), gguf.quants.quantize(x, GGML[qtype]))


@pytest.mark.parametrize("qtype", qformats.QTYPES)
def test_subnormal_blocks_quantize_to_zero(qtype):
    # gguf (like ggml's C code) casts x * (1/d) = Inf to an integer here: undefined, so no byte comparison
    x = (np.random.default_rng(1).standard_normal((2, 256)) * 1e-39).astype(np.float32)
    with np.errstate(divide="raise", over="raise", invalid="raise"):
        q = qformats.quantize(x, qtype)
    assert np.array_equal(qformats.dequantize(q, qtype, 256), np.zeros_like(x))
    assert np.array_equal(gguf.quants.dequantize(q, GGML[qtype]), np.zeros_like(x))


def test_chunked_quantize_equals_one_piece(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 512)).astype(np.float32)
    whole = {q: qformats.quantize(x, q) for q in qformats.QTYPES}
    monkeypatch.setattr(qformats, "_CHUNK_WEIGHTS", 1000)  # 1 row per chunk
    for q in qformats.QTYPES:
        assert np.array_equal(qformats.quantize(x, q), whole[q])


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 32"):
        qformats.quantize(np.zeros((2, 48), np.float32), "q8_0")
    with pytest.raises(ValueError, match="multiple of 256"):
        qformats.quantize(np.zeros((2, 128), np.float32), "q4_k")
    bad = np.zeros((2, 64), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        qformats.quantize(bad, "q4_0")
    with pytest.raises(ValueError, match="fp16"):  # gguf would write an Inf scale
        qformats.quantize(np.full((1, 32), 1e10, np.float32), "q8_0")
    with pytest.raises(ValueError, match="unknown"):
        qformats.quantize(np.zeros((1, 32), np.float32), "q5_1")


def _heavy_tailed(rng, rows, cols):
    x = rng.standard_t(3, size=(rows, cols)).astype(np.float32)
    x[:, rng.choice(cols, 8, replace=False)] *= 20.0  # a few large channels
    return x


def test_q4_k_reads_back_through_gguf_and_beats_q4_0():
    rng = np.random.default_rng(11)
    data = {
        "gaussian": rng.standard_normal((64, 1024)).astype(np.float32),
        "heavy_tailed": _heavy_tailed(rng, 64, 1024),
    }
    edge = _edge_cases(256)
    for name, x in {**data, **edge}.items():
        q = qformats.quantize(x, "q4_k")
        assert q.shape == (x.shape[0], x.shape[1] // 256 * 144)
        ref = gguf.quants.dequantize(q, GT.Q4_K)  # a reader we did not write
        ours = qformats.dequantize(q, "q4_k", x.shape[1])
        assert np.array_equal(ours, ref), name
        if name == "zero_blocks":  # whole zero super-blocks come back exactly zero
            assert not ours[0].any() and not ours[1, :256].any() and not ours[2, 256:512].any()
        if name == "constant":  # a constant block is a min alone: fp16 dmin x 6-bit m
            assert np.allclose(ours, x, rtol=2e-3)
    for name, x in data.items():
        err = {qt: rel_rms(qformats.dequantize(qformats.quantize(x, qt), qt, x.shape[1]), x) for qt in qformats.QTYPES}
        # q4_k spends the same 4.5 bits per weight as q4_0 but fits scale and min per 32
        assert qformats.bits_per_weight("q4_k") == qformats.bits_per_weight("q4_0") == 4.5
        assert err["q4_k"] < 0.9 * err["q4_0"], (name, err)
        assert err["q8_0"] < 0.2 * err["q4_0"], (name, err)
        assert err["q4_k"] < 0.1, (name, err)


# ---------------------------------------------------------------------------
# The C quantizer (_kernels.quantize_rows), which python -m voxtral quantize runs

# the dispatched build (AVX2 where the CPU has it) and the scalar build
BUILDS = [pytest.param(False, id="dispatch"), pytest.param(True, id="scalar")]


def to_bf16_bits(x):
    """float32 -> bfloat16 bits (round to nearest even; finite inputs)"""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.mark.parametrize("scalar", BUILDS)
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_c_q8_0_q4_0_bytes_equal_gguf_reference(qtype, scalar):
    for name, x in _edge_cases(32).items():
        ref = gguf.quants.quantize(x, GGML[qtype])
        assert np.array_equal(_kernels.quantize_rows(x, qtype, scalar=scalar), ref), f"{qtype} {name} (float32)"
        bits = to_bf16_bits(x)  # the checkpoint's own type, read without a float32 copy
        ref16 = gguf.quants.quantize(bf16_to_f32(bits), GGML[qtype])
        assert np.array_equal(_kernels.quantize_rows(bits, qtype, scalar=scalar), ref16), f"{qtype} {name} (bf16)"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    log_scale=st.floats(-6, 5),
    rows=st.integers(1, 6),
    blocks=st.integers(1, 8),
    heavy=st.booleans(),
    scalar=st.booleans(),
)
def test_c_bytes_equal_gguf_reference_at_any_scale(seed, log_scale, rows, blocks, heavy, scalar):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, (rows, 32 * blocks)) if heavy else rng.standard_normal((rows, 32 * blocks))
    x = (x * 10.0**log_scale).astype(np.float32)
    amax = np.abs(x.reshape(-1, 32)).max(axis=1)
    for qtype, top in (("q8_0", 127), ("q4_0", 8)):
        with np.errstate(over="ignore"):
            overflow = np.isinf((amax / np.float32(top)).astype(np.float16)).any()
        if overflow:  # gguf would store an Inf scale; we refuse
            with pytest.raises(ValueError, match="fp16"):
                _kernels.quantize_rows(x, qtype, scalar=scalar)
        else:
            assert np.array_equal(_kernels.quantize_rows(x, qtype, scalar=scalar), gguf.quants.quantize(x, GGML[qtype]))


def _weighted_err(x, deq):
    """q4_k's objective: sum (rms of the super-block + |x|) (deq - x)^2, in float64"""
    x64, d64 = x.astype(np.float64).reshape(-1, 256), deq.astype(np.float64).reshape(-1, 256)
    w = np.sqrt((x64 * x64).mean(axis=1, keepdims=True)) + np.abs(x64)
    return float((w * (d64 - x64) ** 2).sum())


def test_c_q4_k_is_the_numpy_search():
    """The C q4_k runs qformats' search with its float32 sums in a fixed lane
    order (numpy's einsum order is not reproducible): gguf reads its bytes as
    qformats.dequantize does, nearly every super-block is byte-equal to the
    numpy oracle, and the error is no worse than the oracle's."""
    rng = np.random.default_rng(5)
    data = {
        "gaussian": rng.standard_normal((64, 1024)).astype(np.float32),
        "heavy_tailed": _heavy_tailed(rng, 64, 1024),
        **_edge_cases(256),
    }
    for name, x in data.items():
        ours = _kernels.quantize_rows(x, "q4_k")
        assert np.array_equal(ours, _kernels.quantize_rows(x, "q4_k", scalar=True)), name  # every build: one result
        deq = qformats.dequantize(ours, "q4_k", x.shape[1])
        assert np.array_equal(deq, gguf.quants.dequantize(ours, GT.Q4_K)), name
        oracle = qformats.quantize(x, "q4_k")
        same = (ours.reshape(-1, 144) == oracle.reshape(-1, 144)).all(axis=1).mean()
        assert same >= 0.9, (name, same)  # the edge cases have 4 to 33 super-blocks
        err, err_oracle = _weighted_err(x, deq), _weighted_err(x, qformats.dequantize(oracle, "q4_k", x.shape[1]))
        # a differing choice is a near-tie of the two sums' roundings: either may win a block
        big = name in ("gaussian", "heavy_tailed")
        assert err <= err_oracle * (1 + (1e-4 if big else 1e-3)) + 1e-30, (name, err, err_oracle)
        if big:
            assert 0.97 <= same and rel_rms(deq, x) < 0.1


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    log_scale=st.floats(-4, 4),
    rows=st.integers(1, 4),
    blocks=st.integers(1, 3),
    heavy=st.booleans(),
)
@example(seed=247118, log_scale=1.0, rows=1, blocks=3, heavy=False)  # a near-tie: 1.011x the oracle's error
def test_c_q4_k_at_any_scale(seed, log_scale, rows, blocks, heavy):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, (rows, 256 * blocks)) if heavy else rng.standard_normal((rows, 256 * blocks))
    x = (x * 10.0**log_scale).astype(np.float32)
    ours = _kernels.quantize_rows(x, "q4_k")
    assert np.array_equal(ours, _kernels.quantize_rows(x, "q4_k", scalar=True))
    deq = qformats.dequantize(ours, "q4_k", x.shape[1])
    assert np.array_equal(deq, gguf.quants.dequantize(ours, GT.Q4_K))
    oracle = qformats.dequantize(qformats.quantize(x, "q4_k"), "q4_k", x.shape[1])
    # On 1-12 super-blocks one near-tie of the two searches' float32 sums
    # moves a super-block's whole scale set, either way: over 1500 random
    # draws of this strategy the error ratio was 0.90-1.14 (1.1% of draws
    # worse than 1.001, 1.3% better, mean 1.0002). The aggregate claim (no
    # worse than the oracle) is test_c_q4_k_is_the_numpy_search's, on
    # thousands of super-blocks; here a scale the search mishandles (overflow,
    # underflow) would be far outside this band.
    assert _weighted_err(x, deq) <= _weighted_err(x, oracle) * 1.2


@pytest.mark.parametrize("qtype", qformats.QTYPES)
def test_c_quantize_same_bytes_at_any_thread_count(qtype):
    x = np.random.default_rng(9).standard_normal((67, 1024)).astype(np.float32)
    before = _kernels.get_num_threads()
    try:
        got = []
        for n in (1, 2, 3, 8):
            _kernels.set_num_threads(n)
            got.append(_kernels.quantize_rows(x, qtype))
    finally:
        _kernels.set_num_threads(before)
    for g in got[1:]:
        assert np.array_equal(g, got[0])
    out = np.zeros_like(got[0])  # and into a caller's buffer
    assert _kernels.quantize_rows(x, qtype, out=out) is out and np.array_equal(out, got[0])


@pytest.mark.parametrize("scalar", BUILDS)
@pytest.mark.parametrize("qtype", qformats.QTYPES)
def test_c_subnormal_blocks_quantize_to_zero(qtype, scalar):
    x = (np.random.default_rng(1).standard_normal((2, 256)) * 1e-39).astype(np.float32)
    q = _kernels.quantize_rows(x, qtype, scalar=scalar)
    assert np.array_equal(gguf.quants.dequantize(q, GGML[qtype]), np.zeros_like(x))


def test_c_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 32"):
        _kernels.quantize_rows(np.zeros((2, 48), np.float32), "q8_0")
    with pytest.raises(ValueError, match="multiple of 256"):
        _kernels.quantize_rows(np.zeros((2, 128), np.float32), "q4_k")
    with pytest.raises(ValueError, match="unknown"):
        _kernels.quantize_rows(np.zeros((1, 32), np.float32), "q5_1")
    with pytest.raises(TypeError, match="float32 or uint16"):
        _kernels.quantize_rows(np.zeros((1, 32), np.float64), "q8_0")
    with pytest.raises(ValueError, match="2-D"):
        _kernels.quantize_rows(np.zeros(32, np.float32), "q8_0")
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.quantize_rows(np.zeros((2, 64), np.float32)[:, ::2], "q8_0")
    with pytest.raises(ValueError, match="shape"):
        _kernels.quantize_rows(np.zeros((2, 64), np.float32), "q8_0", out=np.zeros((2, 34), np.uint8))
    for qtype in qformats.QTYPES:
        for bad in (np.nan, np.inf, -np.inf):
            x = np.zeros((3, 512), np.float32)
            x[2, 300] = bad
            with pytest.raises(ValueError, match="NaN"):
                _kernels.quantize_rows(x, qtype)
            with pytest.raises(ValueError, match="NaN"):  # the same value as bfloat16 bits
                _kernels.quantize_rows(
                    to_bf16_bits(np.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0))
                    | np.where(x == x, 0, 0x7FC0).astype(np.uint16)
                    | np.where(np.isinf(x), 0x7F80, 0).astype(np.uint16),
                    qtype,
                )
        x = np.full((1, 256), 1e10, np.float32)  # gguf would write an Inf scale
        with pytest.raises(ValueError, match="fp16"):
            _kernels.quantize_rows(x, qtype)
        with pytest.raises(ValueError, match="fp16"):
            _kernels.quantize_rows(to_bf16_bits(x), qtype)
    assert _kernels.quantize_rows(np.zeros((0, 64), np.float32), "q4_0").shape == (0, 36)


# ---------------------------------------------------------------------------
# Quantized model directories


def _source_tensors(src: Path):
    cfg, w, layout = load_weights(src)
    return cfg, weights_by_key(cfg, w), layout


@pytest.fixture(scope="module")
def quantized(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint quantized from both layouts, q8_0 and q4_0."""
    out = tmp_path_factory.mktemp("quantized")
    dirs = {}
    for layout in ("native", "hf"):
        for qt in ("q8_0", "q4_0"):
            dst = out / f"{layout}-{qt}"
            assert quantize.main([str(tiny_ckpt[layout]), str(dst), "--type", qt, "--quiet"]) == 0
            dirs[layout, qt] = dst
    return dirs


@pytest.fixture(scope="module")
def tiny256_ckpt(tmp_path_factory):
    """tiny with every row length a multiple of 256 (q4_k's super-block)."""
    from voxtral.testing.checkpoint import make_checkpoint

    return make_checkpoint(
        tmp_path_factory.mktemp("tiny256"),
        preset="tiny",
        layout="both",
        dim=256,
        head_dim=64,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=512,
        enc_dim=256,
        enc_head_dim=64,
        enc_n_heads=4,
        enc_hidden_dim=256,
    )


def _check_model_dir(qdir: Path, src_native: Path, qtype: str, embeddings: str = "q8_0"):
    cfg, w, layout = load_weights(qdir)
    assert layout == "gguf" and w.quant_type == qtype
    src_cfg, src, _ = _source_tensors(src_native)
    assert (cfg.encoder, cfg.decoder, cfg.audio) == (src_cfg.encoder, src_cfg.decoder, src_cfg.audio)
    assert cfg.rope_style == "interleaved"
    ours = weights_by_key(cfg, w)
    names = native_names(cfg)
    shapes = expected_shapes(cfg)

    # every tensor per the recipe; values from the native source
    for key, arr in ours.items():
        s = src[key]
        want = quantize.tensor_type(key, len(shapes[key]), qtype, embeddings)
        if key == "tok_embeddings":
            assert want == embeddings
        elif is_linear_key(key):
            assert want == qtype
        if want in qformats.BLOCK:
            assert isinstance(arr, QuantMatrix) and arr.qtype == want and arr.shape == shapes[key]
            if want == "q4_k":  # the C search (held against the numpy oracle below), here on the source rows
                assert np.array_equal(arr.data, _kernels.quantize_rows(s, want, scalar=True)), key
            else:  # a quantizer we did not write
                assert np.array_equal(arr.data, gguf.quants.quantize(bf16_to_f32(s), GGML[want])), key
            assert not arr.data.flags.owndata and not arr.data.flags.writeable  # a view of the mapped file
        elif want == "bf16":
            assert arr.dtype == np.uint16 and arr.shape == shapes[key]
            assert np.array_equal(arr, s), key
            assert not arr.flags.owndata
        else:
            assert arr.dtype == np.float32 and np.array_equal(arr, s), key

    # gguf's own reader and dequantizer see the same values
    reader = gguf.GGUFReader(qdir / "model.gguf")
    by_name = {t.name: t for t in reader.tensors}
    assert set(by_name) == set(names.values())
    for key, arr in ours.items():
        t = by_name[names[key]]
        assert tuple(int(n) for n in t.shape[::-1]) == shapes[key]  # ne0 = columns
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        if isinstance(arr, QuantMatrix):
            assert t.tensor_type == GGML[arr.qtype]
            assert np.array_equal(ref, qformats.dequantize(arr.data, arr.qtype, arr.cols)), key
        elif arr.dtype == np.uint16:
            assert t.tensor_type == GT.BF16
            assert np.array_equal(ref.reshape(arr.shape), bf16_to_f32(arr)), key
        else:
            assert t.tensor_type == GT.F32
            assert np.array_equal(ref, arr), key

    # metadata
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "voxtral"
    assert fields["voxtral.format_version"] == 1
    assert fields["voxtral.quant_type"] == qtype
    params = json.loads(fields["voxtral.params_json"])
    assert (
        params["dim"] == cfg.decoder.dim
        and params["multimodal"]["whisper_model_args"]["encoder_args"]["dim"] == cfg.encoder.dim
    )
    rec = json.loads(fields["voxtral.recipe"])
    assert rec["linear"] == qtype and rec["tok_embeddings"] == embeddings
    assert (qdir / "tekken.json").is_file()
    return fields


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("layout", ["native", "hf"])
def test_quantized_model_dir(quantized, tiny_ckpt, layout, qtype):
    fields = _check_model_dir(quantized[layout, qtype], tiny_ckpt["native"], qtype)
    src = tiny_ckpt[layout]
    sha = json.loads(fields["voxtral.source_sha256"])
    weight_files = sorted(p.name for p in src.glob("*.safetensors"))
    assert sorted(sha) == weight_files
    for name, digest in sha.items():
        assert digest == hashlib.sha256((src / name).read_bytes()).hexdigest()
    fp = json.loads(fields["voxtral.source_fingerprint"])
    assert {n for n, _, _ in fp} >= set(weight_files)
    if layout == "native":
        assert from_params_json(src / "params.json").decoder == load_weights(quantized[layout, qtype])[0].decoder


def test_q4_k_model_and_embedding_override(tiny256_ckpt, tmp_path):
    dst = tmp_path / "q4k"
    assert quantize.main([str(tiny256_ckpt["hf"]), str(dst), "--type", "q4_k", "--quiet"]) == 0
    _check_model_dir(dst, tiny256_ckpt["native"], "q4_k")
    for emb in ("bf16", "q4_k"):
        d = tmp_path / f"q4_0-{emb}"
        assert quantize.main([str(tiny256_ckpt["native"]), str(d), "--type", "q4_0", "--embeddings", emb, "-q"]) == 0
        _check_model_dir(d, tiny256_ckpt["native"], "q4_0", embeddings=emb)


def test_q4_k_needs_aligned_rows(tiny_ckpt, tmp_path, capsys):
    assert quantize.main([str(tiny_ckpt["native"]), str(tmp_path / "x"), "--type", "q4_k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voxtral: error:") and "multiple of 256" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------
# Atomicity, refusal, command line


def _leftovers(parent: Path, name: str):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_leaves_no_dst(tiny_ckpt, tmp_path, monkeypatch, exc):
    calls = []
    real = quantize._write_tensor

    def failing(writer, name, arr, ttype, on_rows):
        calls.append(name)
        if len(calls) == 10:
            raise exc("injected")
        return real(writer, name, arr, ttype, on_rows)

    monkeypatch.setattr(quantize, "_write_tensor", failing)
    dst = tmp_path / "out"
    with pytest.raises(exc):
        quantize.quantize_model(tiny_ckpt["native"], dst, "q8_0")
    assert not dst.exists() and _leftovers(tmp_path, "out") == []
    # an existing DST (a previous output) replaced with force survives a failed run untouched
    dst.mkdir()
    (dst / "model.gguf").write_text("old")
    calls.clear()
    with pytest.raises(exc):
        quantize.quantize_model(tiny_ckpt["native"], dst, "q8_0", force=True)
    assert (dst / "model.gguf").read_text() == "old" and _leftovers(tmp_path, "out") == []


def _hash_threads():
    return [t for t in threading.enumerate() if t.name.startswith("voxtral-sha256")]


def test_sha256_is_taken_beside_the_conversion(tiny_ckpt, tmp_path, monkeypatch):
    """The source is hashed once, on its own thread while the tensors are
    converted, and the digest lands in the reserved metadata value (checked
    against hashlib over the file by test_quantized_model_dir)."""
    seen = []
    real_hash, real_write = quantize.weight_sha256, quantize._write_tensor

    def hashing(*args):
        seen.append(("hash", threading.current_thread().name))
        return real_hash(*args)

    def writing(*args):
        seen.append(("write", threading.current_thread().name))
        return real_write(*args)

    monkeypatch.setattr(quantize, "weight_sha256", hashing)
    monkeypatch.setattr(quantize, "_write_tensor", writing)
    dst = quantize.quantize_model(tiny_ckpt["native"], tmp_path / "out", "q8_0")
    hashes = [name for what, name in seen if what == "hash"]
    assert len(hashes) == 1 and hashes[0].startswith("voxtral-sha256")
    assert {name for what, name in seen if what == "write"} == {threading.current_thread().name}
    sha = json.loads(gguf.GGUFReader(dst / "model.gguf").get_field(gguf_io.KEY_SOURCE_SHA256).contents())
    src = tiny_ckpt["native"] / "consolidated.safetensors"
    assert sha == {src.name: hashlib.sha256(src.read_bytes()).hexdigest()}
    assert _hash_threads() == []


def test_a_failed_conversion_stops_the_hash(tiny_ckpt, tmp_path, monkeypatch):
    started = threading.Event()
    real = quantize.weight_sha256

    def slow_hash(model_dir, layout, stop):
        started.set()
        assert stop.wait(10), "the failed conversion did not stop the hash"
        return real(model_dir, layout, stop)

    def failing(*args):
        started.wait(10)
        raise RuntimeError("injected")

    monkeypatch.setattr(quantize, "weight_sha256", slow_hash)
    monkeypatch.setattr(quantize, "_write_tensor", failing)
    with pytest.raises(RuntimeError, match="injected"):
        quantize.quantize_model(tiny_ckpt["native"], tmp_path / "out", "q8_0")
    assert _hash_threads() == [] and not (tmp_path / "out").exists()
    stop = threading.Event()
    stop.set()
    assert quantize.weight_sha256(tiny_ckpt["native"], "native", stop) == {}  # stopped: nothing claimed


def test_replace_metadata_needs_the_same_length(tmp_path):
    w = gguf_io.GGUFStreamWriter(tmp_path / "m.gguf", {"voxtral.a": "x" * 8, "voxtral.b": "y" * 8})
    w.add_tensor("t", (2,), "f32")
    w.begin()
    w.write(np.zeros(2, np.float32))
    w.end_tensor()
    with pytest.raises(ValueError, match="bytes"):
        w.replace_metadata("voxtral.a", "x" * 8, "z" * 9)
    with pytest.raises(ValueError, match="exactly once"):
        w.replace_metadata("voxtral.a", "y" * 8, "z" * 8)  # not the value written under this key
    w.replace_metadata("voxtral.b", "y" * 8, "12345678")
    w.close()
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    assert r.get_field("voxtral.a").contents() == "x" * 8 and r.get_field("voxtral.b").contents() == "12345678"
    assert np.array_equal(r.get_tensor(0).data, np.zeros(2, np.float32))


def test_refuses_existing_dst_and_source_without_force(tiny_ckpt, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    with pytest.raises(UsageError, match="--force"):
        quantize.quantize_model(tiny_ckpt["native"], dst, "q8_0")
    assert list(dst.iterdir()) == []
    quantize.quantize_model(tiny_ckpt["native"], dst, "q8_0", force=True)
    assert load_weights(dst)[1].quant_type == "q8_0"
    with pytest.raises(UsageError, match="already a quantized model"):
        quantize.quantize_model(dst, tmp_path / "again", "q4_0")
    src_copy = tmp_path / "src"
    shutil.copytree(tiny_ckpt["native"], src_copy)
    with pytest.raises(UsageError, match="source"):
        quantize.quantize_model(src_copy, src_copy, "q8_0", force=True)
    assert (src_copy / "consolidated.safetensors").is_file()


def run_cli(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "voxtral", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_command_line(tiny_ckpt, tmp_path):
    dst = tmp_path / "q"
    r = run_cli("quantize", tiny_ckpt["hf"], dst, "--type", "q4_0")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and load_weights(dst)[1].quant_type == "q4_0"
    r = run_cli("quantize", tiny_ckpt["hf"], dst, "--type", "q4_0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    r = run_cli("quantize", tiny_ckpt["hf"], dst, "--type", "q8_0", "--force", "--quiet")
    assert r.returncode == 0 and r.stderr == ""
    assert load_weights(dst)[1].quant_type == "q8_0"
    r = run_cli("quantize", tmp_path / "nowhere", tmp_path / "q2", "--type", "q8_0")
    assert r.returncode == 4 and r.stderr.startswith("voxtral: error:") and r.stderr.count("\n") == 1
    r = run_cli("quantize", tiny_ckpt["hf"], tmp_path / "q3", "--type", "q3_k")
    assert r.returncode == 2 and not (tmp_path / "q3").exists()
    r = run_cli("--help")
    assert r.returncode == 0 and "--quant" in r.stdout


# ---------------------------------------------------------------------------
# load(..., quant=) and its cache


@pytest.fixture
def model_copy(tiny_ckpt, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_ckpt["native"], dst)
    return dst


def _count_quantizations(monkeypatch):
    calls = []
    real = quantize.quantize_model

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(quantize, "quantize_model", counting)
    return calls


def test_load_quant_cache_is_created_once_and_reused(model_copy, monkeypatch):
    calls = _count_quantizations(monkeypatch)
    notes = []
    m = voxtral.load(model_copy, quant="q8_0", on_status=notes.append)
    cache = model_copy / ".voxtral-quant" / "q8_0"
    assert len(calls) == 1 and len(notes) == 1 and "q8_0" in notes[0]
    assert m.weights.quant_type == "q8_0" and m.model_dir == cache and m.layout == "gguf"
    assert isinstance(m.weights.decoder_layers[0].w1, QuantMatrix)
    stamp = (cache / "model.gguf").stat().st_mtime_ns

    m2 = voxtral.load(model_copy, quant="q8_0", on_status=notes.append)
    assert len(calls) == 1 and len(notes) == 1  # reused, not requantized
    assert (cache / "model.gguf").stat().st_mtime_ns == stamp
    assert np.array_equal(m2.weights.tok_embeddings.data, m.weights.tok_embeddings.data)

    # a replaced source file makes the cache stale
    st = (model_copy / "consolidated.safetensors").stat()
    os.utime(model_copy / "consolidated.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    voxtral.load(model_copy, quant="q8_0", on_status=notes.append)
    assert len(calls) == 2 and len(notes) == 2
    # another type is another cache entry; a BF16 load is untouched by all this
    voxtral.load(model_copy, quant="q4_0")
    assert len(calls) == 3 and (model_copy / ".voxtral-quant" / "q4_0" / "model.gguf").is_file()
    assert voxtral.load(model_copy).weights.quant_type is None


def test_load_quant_falls_back_to_xdg_cache(model_copy, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    real = quantize._dir_writable
    monkeypatch.setattr(quantize, "_dir_writable", lambda d: False if model_copy in (d, *d.parents) else real(d))
    calls = _count_quantizations(monkeypatch)
    m = voxtral.load(model_copy, quant="q4_0")
    assert xdg in m.model_dir.parents and m.model_dir.name == "q4_0"
    assert not (model_copy / ".voxtral-quant").exists()
    voxtral.load(model_copy, quant="q4_0")
    assert len(calls) == 1


def test_quantized_dir_loads_as_is_and_refuses_another_type(quantized):
    qdir = quantized["native", "q8_0"]
    m = voxtral.load(qdir)
    assert m.weights.quant_type == "q8_0" and m.layout == "gguf"
    assert voxtral.load(qdir, quant="q8_0").weights.quant_type == "q8_0"
    with pytest.raises(UsageError, match="q8_0.*q4_0"):
        voxtral.load(qdir, quant="q4_0")
    with pytest.raises(UsageError, match="unknown quantization type"):
        voxtral.load(qdir, quant="int3")


def test_loading_is_fast_and_copies_nothing(quantized):
    import time

    t0 = time.perf_counter()
    cfg, w, _ = load_weights(quantized["native", "q4_0"])
    assert time.perf_counter() - t0 < 1.0
    for arr in weights_by_key(cfg, w).values():
        data = arr.data if isinstance(arr, QuantMatrix) else arr
        if data.ndim >= 2:
            assert not data.flags.owndata


# ---------------------------------------------------------------------------
# Broken files


def _rewrite(src_dir: Path, dst_dir: Path, *, tensors=None, metadata=None):
    """Copy a quantized model directory, editing its tensors
    ({name: (ttype, shape, bytes-array) or None to drop}) and metadata."""
    f = gguf_io.GGUFFile(src_dir / "model.gguf")
    meta = {
        k: f._reader.get_field(k).contents()
        for k in (
            gguf_io.KEY_FORMAT_VERSION,
            gguf_io.KEY_PARAMS_JSON,
            gguf_io.KEY_SOURCE_SHA256,
            gguf_io.KEY_SOURCE_FINGERPRINT,
            gguf_io.KEY_QUANT_TYPE,
            gguf_io.KEY_RECIPE,
        )
    }
    meta.update(metadata or {})
    items = dict(f.tensors)
    for name, new in (tensors or {}).items():
        if new is None:
            items.pop(name)
        else:
            items[name] = new
    dst_dir.mkdir()
    shutil.copyfile(src_dir / "tekken.json", dst_dir / "tekken.json")
    w = gguf_io.GGUFStreamWriter(dst_dir / "model.gguf", {k: v for k, v in meta.items() if v is not None})
    for name, (ttype, shape, _) in items.items():
        w.add_tensor(name, shape, ttype)
    w.begin()
    for _, _, data in items.values():
        w.write(data)
        w.end_tensor()
    w.close()
    return dst_dir


def test_rewrite_helper_round_trips(quantized, tmp_path):
    d = _rewrite(quantized["native", "q4_0"], tmp_path / "same")
    assert load_weights(d)[1].quant_type == "q4_0"


def test_mismatched_files_are_checkpoint_errors(quantized, tmp_path):
    src = quantized["native", "q4_0"]
    cfg = load_weights(src)[0]
    names = native_names(cfg)
    wq, conv, norm = names["dec.0.wq"], names["conv1_w"], names["dec.0.attn_norm"]
    rows, cols = expected_shapes(cfg)["dec.0.wq"]
    cases = {
        "wrong shape": dict(
            tensors={wq: ("q4_0", (rows, cols - 32), np.zeros((rows, (cols - 32) // 32 * 18), np.uint8))}
        ),
        "missing": dict(tensors={wq: None}),
        "extra": dict(tensors={"layers.99.attention.wq.weight": ("f32", (4,), np.zeros(4, np.float32))}),
        "quantized conv": dict(tensors={conv: ("q8_0", (1, 32), np.zeros((1, 34), np.uint8))}),
        "quantized vector": dict(
            tensors={
                norm: (
                    "q8_0",
                    (1, 32 * ((cfg.decoder.dim + 31) // 32)),
                    np.zeros((1, 34 * ((cfg.decoder.dim + 31) // 32)), np.uint8),
                )
            }
        ),
        "f32 matrix": dict(tensors={wq: ("f32", (rows, cols), np.zeros((rows, cols), np.float32))}),
        "nan norm": dict(tensors={norm: ("f32", (cfg.decoder.dim,), np.full(cfg.decoder.dim, np.nan, np.float32))}),
        "version": dict(metadata={gguf_io.KEY_FORMAT_VERSION: 2}),
        "no params": dict(metadata={gguf_io.KEY_PARAMS_JSON: None}),
        "bad params": dict(metadata={gguf_io.KEY_PARAMS_JSON: "{not json"}),
        "params disagree": dict(
            metadata={
                gguf_io.KEY_PARAMS_JSON: json.dumps(
                    {**json.loads(gguf_io.GGUFFile(src / "model.gguf").get_str(gguf_io.KEY_PARAMS_JSON)), "n_layers": 3}
                )
            }
        ),
        "quant type": dict(metadata={gguf_io.KEY_QUANT_TYPE: "q2_k"}),
        "int as string": dict(metadata={gguf_io.KEY_QUANT_TYPE: 4}),
    }
    for i, (_what, edit) in enumerate(cases.items()):
        d = _rewrite(src, tmp_path / f"case{i}", **edit)
        with pytest.raises(CheckpointError):
            load_weights(d)
        with pytest.raises(ModelFileError):  # and through the public API
            voxtral.load(d)


def test_truncated_or_corrupt_gguf_is_a_checkpoint_error(quantized, tmp_path):
    src = quantized["native", "q8_0"]
    raw = (src / "model.gguf").read_bytes()
    d = tmp_path / "m"
    shutil.copytree(src, d)
    path = d / "model.gguf"
    rng = np.random.default_rng(5)
    data_start = gguf.GGUFReader(src / "model.gguf").data_offset
    cuts = sorted(
        {0, 3, 4, 8, 23, 24, 100, data_start - 1, data_start, len(raw) - 1, *rng.integers(1, len(raw), 20).tolist()}
    )
    for cut in cuts:
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError):
            load_weights(d)
    path.write_bytes(b"GGUF" + bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    with pytest.raises(CheckpointError):
        load_weights(d)
    path.write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(CheckpointError):
        load_weights(d)
    # random byte flips in the header and tensor table: an error or a load, never a crash
    for _ in range(60):
        blob = bytearray(raw)
        pos = int(rng.integers(4, data_start))
        blob[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(blob))
        try:
            load_weights(d)
        except CheckpointError:
            pass


# ---------------------------------------------------------------------------
# Transcription through a quantized model (needs _kernels.matmul_q)


def _step_logits(model_dir, wav):
    import soundfile as sf

    samples, sr = sf.read(wav, dtype="float32")
    stream = voxtral.load(model_dir).stream(sample_rate=sr, keep_logits=True)
    events = list(stream.feed(samples)) + list(stream.finish())
    return stream.logits, [e.token_id for e in events if e.token_id >= 0]


@needs_matmul_q
def test_q8_0_model_follows_bf16(quantized, tiny_ckpt, audio_dir):
    # The tiny random model amplifies weight error ~7x (measured with float
    # activations: q8_0 gives 3.7% relative logit error at the first step,
    # q4_0 68%), and greedy decoding diverges after the first flipped token,
    # so compare the first step, which sees the same input in both runs.
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    ref, ref_tokens = _step_logits(tiny_ckpt["native"], wav)
    got, tokens = _step_logits(quantized["hf", "q8_0"], wav)
    assert len(tokens) == len(ref_tokens) > 0
    assert rel_rms(got[0], ref[0]) < 0.15


@needs_matmul_q
def test_quantized_stream_equals_offline(quantized, audio_dir):
    import soundfile as sf

    model = voxtral.load(quantized["native", "q4_0"])
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    offline = model.transcribe(wav).token_ids
    samples, sr = sf.read(wav, dtype="float32")
    stream = model.stream(sample_rate=sr)
    events = []
    for start in range(0, len(samples), 3001):
        events += stream.feed(samples[start : start + 3001])
    events += stream.finish()
    assert [e.token_id for e in events if e.token_id >= 0] == offline


@needs_matmul_q
def test_cli_quant_prints_one_line_the_first_time(tiny_ckpt, audio_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_ckpt["native"], model)
    wav = audio_dir / "night1968_5s_dont_worry_about_him.wav"
    r = run_cli(wav, "--model", model, "--quant", "q8_0")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("quantizing") == 1 and r.stdout.strip()
    expected = voxtral.load(model / ".voxtral-quant" / "q8_0").transcribe(wav).text
    assert r.stdout == expected + "\n"
    r2 = run_cli(wav, "--model", model, "--quant", "q8_0")
    assert r2.returncode == 0 and "quantizing" not in r2.stderr and r2.stdout == r.stdout
