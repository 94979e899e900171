"""A/B: GGML-layout kernels (matmul_q) vs repacked (matmul_qp), decoder-layer shapes, cold weights."""

import sys
import time

import numpy as np

from voxtral import _kernels as K
from voxtral.qformats import BLOCK, row_bytes


def quant_weights(qtype, N, K_, seed=0):
    r = np.random.default_rng(seed)
    w = r.integers(0, 256, (N, row_bytes(qtype, K_)), dtype=np.uint8)
    blocks = w.reshape(-1, BLOCK[qtype][1])
    blocks[:, 0:2] = np.frombuffer(np.full(blocks.shape[0], 0.01, np.float16).tobytes(), np.uint8).reshape(-1, 2)
    return w


K.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
SHAPES = [(4096, 3072), (1024, 3072), (1024, 3072), (3072, 4096), (9216, 3072), (9216, 3072), (3072, 9216)]
types = sys.argv[2].split(",") if len(sys.argv) > 2 else ["q4_0", "q8_0"]
Ms = [1, 2, 4, 8]
buf = np.ones(1 << 30, np.uint8)


def bw():
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        K.stream_read(buf)
        best = min(best, time.perf_counter() - t)
    return buf.nbytes / best / 1e9


print("read GB/s before", round(bw(), 2), "threads", K.get_num_threads(), "isa", K.active_isa())
for qt in types:
    layers = []
    nbytes = 0
    seed = 0
    while nbytes < 300e6:
        L = []
        for N, K_ in SHAPES:
            w = quant_weights(qt, N, K_, seed)
            seed += 1
            L.append((N, K_, w, K.repack_q(w, qt, K_)))
            nbytes += w.nbytes
        layers.append(L)
    lb = sum(w.nbytes for _, _, w, _ in layers[0])
    res = {}
    for _ in range(5):
        for M in Ms:
            x = {K_: np.random.default_rng(M).standard_normal((M, K_)).astype(np.float32) for K_ in (3072, 4096, 9216)}
            for kind in ("ggml", "packed"):
                t0 = time.perf_counter()
                for L in layers:
                    for N, K_, w, wp in L:
                        if kind == "ggml":
                            K.matmul_q(x[K_], w, qt, K_)
                        else:
                            K.matmul_qp(x[K_], wp, qt, N, K_)
                t = (time.perf_counter() - t0) / len(layers)
                res[(kind, M)] = min(res.get((kind, M), 1e9), t)
    b = bw()
    for kind in ("ggml", "packed"):
        t1 = res[(kind, 1)]
        print(
            f"{qt} {kind:6s} layer {lb / 1e6:.1f} MB: M=1 {t1 * 1e3:.2f} ms = {lb / t1 / 1e9:.2f} GB/s "
            f"({lb / t1 / 1e9 / b:.2f} of read {b:.2f})",
            " ".join(f"M={M}: {res[(kind, M)] / t1:.2f}x" for M in Ms[1:]),
        )

# encoder layer (dim 1280, 32 heads x 64, ffn 5120): M=4 = one 80 ms live push, M=256 offline rows
ENC = [(2048, 1280), (2048, 1280), (2048, 1280), (1280, 2048), (5120, 1280), (5120, 1280), (1280, 5120)]
for qt in types:
    layers, seed, nbytes = [], 100, 0
    while nbytes < 300e6:
        L = []
        for N, K_ in ENC:
            w = quant_weights(qt, N, K_, seed)
            seed += 1
            L.append((N, K_, w, K.repack_q(w, qt, K_)))
            nbytes += w.nbytes
        layers.append(L)
    lb = sum(w.nbytes for _, _, w, _ in layers[0])
    res = {}
    for _ in range(3):
        for M in (4, 256):
            x = {K_: np.random.default_rng(M).standard_normal((M, K_)).astype(np.float32) for K_ in (1280, 2048, 5120)}
            use = layers if M == 4 else layers[:2]
            for kind in ("ggml", "packed"):
                t0 = time.perf_counter()
                for L in use:
                    for N, K_, w, wp in L:
                        if kind == "ggml":
                            K.matmul_q(x[K_], w, qt, K_)
                        else:
                            K.matmul_qp(x[K_], wp, qt, N, K_)
                t = (time.perf_counter() - t0) / len(use)
                res[(kind, M)] = min(res.get((kind, M), 1e9), t)
    b = bw()
    macs = sum(N * K_ for N, K_ in ENC)
    for kind in ("ggml", "packed"):
        t4, t256 = res[(kind, 4)], res[(kind, 256)]
        print(
            f"enc {qt} {kind:6s} layer {lb / 1e6:.1f} MB: M=4 {t4 * 1e3:.2f} ms "
            f"({lb / b / 1e9 / t4:.2f} of floor {lb / b / 1e6:.2f} ms)"
            f"  M=256 {t256 * 1e3:.1f} ms = {2 * 256 * macs / t256 / 1e9:.0f} GOPS; "
            f"linear s per audio s (32 layers, 50 rows/s): {t256 / 256 * 50 * 32:.3f}"
        )
