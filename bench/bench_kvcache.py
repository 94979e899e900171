"""Decoder attention over the KV cache per stored dtype (f32, bf16, int8):
one new token's attention at T = 512, 2048, 8192 cached positions, run over
26 distinct layer caches (the real decoder depth, so nothing stays in the CPU
caches between layers as it would not in a real step). Reports ms per token
(26 layers) and per layer, the effective K/V read rate (bytes of K, V and
scales streamed per second) and its ratio to the machine's measured copy
bandwidth, and the ISA that ran. Never asserts a time."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral import _kernels as K

LAYERS, HQ, HKV, D = 26, 32, 8, 128  # Voxtral Mini 4B Realtime's decoder


def _layer_caches(kind: str, T: int):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((T, HKV, D), dtype=np.float32)
    v = rng.standard_normal((T, HKV, D), dtype=np.float32)
    if kind == "f32":
        one = (k, v, None, None)
    else:
        storage = np.uint16 if kind == "bf16" else np.int8
        kc, vc = np.empty(k.shape, storage), np.empty(v.shape, storage)
        ks = vs = None
        if kind == "int8":
            ks, vs = np.empty((T, HKV), np.float32), np.empty((T, HKV), np.float32)
        K.kv_store(k, kc, ks)
        K.kv_store(v, vc, vs)
        one = (kc, vc, ks, vs)
    return [tuple(None if a is None else a.copy() for a in one) for _ in range(LAYERS)]


@pytest.mark.parametrize("T", [512, 2048, 8192])
@pytest.mark.parametrize("kind", ["f32", "bf16", "int8"])
def test_decoder_attention_per_token(benchmark, bandwidth, kind, T):
    layers = _layer_caches(kind, T)
    q = np.random.default_rng(1).standard_normal((1, HQ, D), dtype=np.float32)
    out = np.empty_like(q)
    scale = D**-0.5

    def one_token():
        for k, v, ks, vs in layers:
            if kind == "f32":
                K.attention(q, k, v, out, T - 1, 0, 8192, scale)
            else:
                K.attention_kv(q, k, v, ks, vs, out, T - 1, 0, 8192, scale)

    benchmark.pedantic(one_token, rounds=5, iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.min
    read = sum(a.nbytes for layer in layers for a in layer if a is not None)
    benchmark.extra_info.update(
        isa=K.active_isa(),
        threads=K.get_num_threads(),
        kv_cache=kind,
        positions=T,
        ms_per_token_26_layers=round(t * 1e3, 2),
        ms_per_layer=round(t * 1e3 / LAYERS, 3),
        kv_mb_per_token=round(read / 1e6, 1),
        kv_gb_s=round(read / t / 1e9, 2),
        bandwidth_gb_s=round(bandwidth / 1e9, 2),
        ratio_to_bandwidth=round(read / t / bandwidth, 3),
    )
