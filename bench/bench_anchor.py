"""Our decoder step against llama.cpp's, same shapes, weight type and threads, one run.

Per weight type (bf16, q8_0, q4_0, q4_k): our decoder step (26 layers + LM
head, one token, int8 KV for the quantized types) on the full-size random
checkpoint, and llama.cpp's decoded token on a llama GGUF of the same shapes
quantized by llama.cpp to the same recipe (see anchor_llama.py), at a short
context and at ~4000 positions. Both sides use the kernels' thread count.
extra_info holds both figures and the ratio ours / llama.cpp (< 1: we are
faster). Skipped, with the reason, when llama-cpp-python is not installed.

Also the quantizer: ours (python -m voxtral quantize, the full model) and
llama.cpp's (llama_model_quantize, the decoder GGUF) per type, wall seconds
and seconds per GB of BF16 read.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anchor_llama
import pytest
from bench_model import _bench_dir
from livesim import fill_cache

import voxtral
from voxtral import _kernels
from voxtral.decoder import DecoderRows

SHORT = 64


@pytest.fixture(scope="module")
def llama_py():
    py = anchor_llama.llama_python()
    if py is None:
        pytest.skip(anchor_llama.why_missing())
    return py


@pytest.fixture(scope="module")
def full_dir() -> Path:
    d = _bench_dir()
    if not (d / "consolidated.safetensors").is_file():
        pytest.skip(f"no full-size checkpoint at {d} (run bench_model.py once, or set VOXTRAL_BENCH_DIR)")
    return d


def our_step_ms(model, ctx: int, reps: int = 5) -> float:
    """min ms of one decoder step + LM head with ``ctx`` cached positions"""
    import numpy as np

    dec = model.decoder
    cache = dec.new_cache(model.kv_cache)  # the KV storage the model was loaded with
    ada = dec.ada_scales(6)
    x = np.random.default_rng(0).standard_normal((1, model.config.decoder.dim)).astype(np.float32)
    dec.forward([DecoderRows(cache, x.copy(), ada)])
    fill_cache(cache, ctx)
    best = float("inf")
    for _ in range(reps + 1):  # the first pages the weights in
        t = time.perf_counter()
        dec.logits(dec.forward([DecoderRows(cache, x.copy(), ada)]))
        best = min(best, time.perf_counter() - t)
    return best * 1000


@pytest.mark.parametrize("qtype", anchor_llama.TYPES)
def test_decoder_vs_llama(benchmark, llama_py, full_dir, qtype):
    path, _ = anchor_llama.ensure_gguf(qtype, llama_py)
    threads = _kernels.get_num_threads()
    model = voxtral.load(
        full_dir, quant=None if qtype == "bf16" else qtype, kv_cache="f32" if qtype == "bf16" else "int8"
    )
    info = {"isa": _kernels.active_isa(), "threads": threads}
    contexts = [("short", SHORT)] + ([("long", anchor_llama.LONG)] if anchor_llama.LONG else [])
    for label, ctx in contexts:
        ours = our_step_ms(model, ctx)
        theirs = anchor_llama.llama_decode_ms(llama_py, path, threads, ctx)
        info.update(
            {
                f"ours_ms_{label}": round(ours, 1),
                f"llama_ms_{label}": round(min(theirs["ms"]), 1),
                f"llama_ctx_{label}": theirs["ctx"],
                f"ratio_{label}": round(ours / min(theirs["ms"]), 3),
            }
        )
    # partial binds the model now (a lambda would look `model` up when called, a name
    # the `del` below unbinds); the step is deleted with it so the weights are freed
    step = functools.partial(our_step_ms, model, SHORT, reps=1)
    benchmark.pedantic(step, rounds=2, iterations=1)
    benchmark.extra_info.update(info)
    del step, model
    gc.collect()


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k"])
def test_quantize_vs_llama(benchmark, llama_py, full_dir, qtype):
    src = anchor_llama.ensure_source(llama_py)
    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "voxtral", "quantize", str(full_dir), f"{tmp}/ours", "--type", qtype, "--quiet"],
            check=True,
        )
        ours = time.perf_counter() - t
        theirs = anchor_llama.llama_quantize(
            llama_py, src, Path(tmp) / "theirs.gguf", qtype, threads=_kernels.get_num_threads()
        )
    ours_gb = sum(p.stat().st_size for p in full_dir.glob("*.safetensors")) / 1e9
    theirs_gb = src.stat().st_size / 1e9
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "ours_s": round(ours, 1),
            "ours_bf16_gb": round(ours_gb, 2),
            "llama_s": round(theirs, 1),
            "llama_bf16_gb": round(theirs_gb, 2),
            "ratio_s_per_gb": round((ours / ours_gb) / (theirs / theirs_gb), 3),
        }
    )
