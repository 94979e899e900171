"""One entry point for every weight matrix product, whatever the format:
BF16 matrices (uint16 bits) go to the exact BF16 kernel, quantized ones
(``QuantMatrix``) to the integer kernels, which quantize each row of x to
int8 on the fly. Both are row-deterministic, so streaming equals offline in
every mode."""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from .qformats import QuantMatrix
from .safetensors_io import bf16_to_float32

# Accuracy measurements (voxtral.testing.accuracy) watch the inputs of every
# product; None in normal use, so the hot path pays one global lookup.
observer = None


def linear(x: np.ndarray, w, bias=None, out=None, accumulate: bool = False) -> np.ndarray:
    """out[M,N] (+)= x[M,K] @ w[N,K]^T (+ bias)."""
    if observer is not None:
        observer(x, w)
    return _product(x, w, bias, out, accumulate)


def _product(x: np.ndarray, w, bias=None, out=None, accumulate: bool = False) -> np.ndarray:
    if isinstance(w, QuantMatrix):
        if w.packed is not None:
            return K.matmul_qp(x, w.packed, w.qtype, w.rows, w.cols, bias, out=out, accumulate=accumulate)
        return K.matmul_q(x, w.data, w.qtype, w.cols, bias, out=out, accumulate=accumulate)
    return K.matmul_bf16(x, w, bias, out=out, accumulate=accumulate)


def linear_many(x: np.ndarray, ws, biases=None) -> list[np.ndarray]:
    """[x[M,K] @ w[N,K]^T (+ bias) for each w]: the products of one input
    (the attention's q, k and v; the FFN's gate and up). Where every matrix
    is repacked, one call quantizes x once and runs all their tasks in one
    parallel region; the outputs are the same bits as one linear() each."""
    biases = [None] * len(ws) if biases is None else biases
    if observer is not None:
        for w in ws:
            observer(x, w)
    if all(isinstance(w, QuantMatrix) and w.packed is not None for w in ws):
        return K.matmul_qp_many(x, [(w.packed, w.qtype, w.rows, b) for w, b in zip(ws, biases, strict=True)])
    return [_product(x, w, b) for w, b in zip(ws, biases, strict=True)]


def embedding_rows(table, ids) -> np.ndarray:
    """Rows ``ids`` of an embedding table (BF16 bits or quantized) as float32."""
    if isinstance(table, QuantMatrix):
        return table.rows_f32(ids)
    rows = table[np.asarray(ids, dtype=np.int64)]
    return bf16_to_float32(rows)
