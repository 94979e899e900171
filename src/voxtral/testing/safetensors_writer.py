"""A streaming safetensors writer: the header is written first from the
declared tensor specs, then each tensor's raw bytes are appended in order, in
one or more pieces, so a multi-gigabyte file never has to be held in memory.

File format (https://github.com/huggingface/safetensors): 8-byte little-endian
header length N, N bytes of JSON (padded with spaces to a multiple of 8), then
the tensors' raw little-endian data at the header's ``data_offsets``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..safetensors_io import bf16_to_float32

# safetensors dtype name -> (numpy dtype used to carry the bytes, item size)
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BF16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "F32": (np.dtype("<f4"), 4),
    "F64": (np.dtype("<f8"), 8),
    "I8": (np.dtype("i1"), 1),
    "U8": (np.dtype("u1"), 1),
    "I16": (np.dtype("<i2"), 2),
    "U16": (np.dtype("<u2"), 2),
    "I32": (np.dtype("<i4"), 4),
    "I64": (np.dtype("<i8"), 8),
}


class TensorSpec:
    """Name, safetensors dtype and shape of one tensor to be written."""

    __slots__ = ("name", "dtype", "shape")

    def __init__(self, name: str, dtype: str, shape: Sequence[int]):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported safetensors dtype {dtype!r}")
        self.name = name
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype][1]

    def __repr__(self) -> str:
        return f"TensorSpec({self.name!r}, {self.dtype!r}, {self.shape})"


def build_header(specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length prefix plus the space-padded JSON header for ``specs``,
    whose data follow in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for s in specs:
        if s.name in header or s.name == "__metadata__":
            raise ValueError(f"duplicate tensor name {s.name!r}")
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob


class SafetensorsWriter:
    """Write a safetensors file whose tensors are declared up front.

    >>> with SafetensorsWriter(path, [TensorSpec("w", "BF16", (2, 3))]) as w:
    ...     w.write("w", bf16_bits)          # or several write() calls of row blocks

    Tensors must be written in the declared order; a tensor may be written in
    several pieces (consecutive calls with the same name, C order). ``close``
    checks that every byte was written (a short file is deleted, not left
    behind looking valid).
    """

    def __init__(self, path: str | os.PathLike, specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.specs = list(specs)
        self._index = {s.name: i for i, s in enumerate(self.specs)}
        header = build_header(self.specs, metadata)
        self._f = open(self.path, "wb")
        self._f.write(header)
        self._cur = 0  # index of the tensor being written
        self._done = 0  # bytes of it written so far
        self._closed = False

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs)

    def _advance_over_empty(self) -> None:
        while self._cur < len(self.specs) and self.specs[self._cur].nbytes == 0 and self._done == 0:
            self._cur += 1

    def write(self, name: str, data: np.ndarray | bytes | memoryview) -> None:
        """Append ``data`` (all or the next part of tensor ``name``)."""
        if self._closed:
            raise ValueError("writer is closed")
        self._advance_over_empty()
        if self._cur >= len(self.specs):
            raise ValueError(f"{self.path.name}: all tensors already written, got {name!r}")
        spec = self.specs[self._cur]
        if name != spec.name:
            if name not in self._index:
                raise KeyError(f"{self.path.name}: tensor {name!r} was not declared")
            raise ValueError(f"{self.path.name}: expected tensor {spec.name!r} next, got {name!r}")
        if isinstance(data, np.ndarray):
            want = DTYPES[spec.dtype][0]
            if data.dtype.itemsize != want.itemsize or data.dtype.kind != want.kind:
                raise TypeError(f"{name}: array dtype {data.dtype} does not carry {spec.dtype}")
            buf = memoryview(np.ascontiguousarray(data).astype(want, copy=False)).cast("B")
        else:
            buf = memoryview(data).cast("B")
        if self._done + buf.nbytes > spec.nbytes:
            raise ValueError(f"{name}: {self._done + buf.nbytes} bytes written, declared {spec.nbytes}")
        self._f.write(buf)
        self._done += buf.nbytes
        if self._done == spec.nbytes:
            self._cur += 1
            self._done = 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._advance_over_empty()
        complete = self._cur >= len(self.specs)
        self._f.close()
        if not complete:
            self.path.unlink(missing_ok=True)
            raise ValueError(f"{self.path.name}: closed before tensor {self.specs[self._cur].name!r} was fully written")

    def abort(self) -> None:
        """Close and delete the partial file."""
        if not self._closed:
            self._closed = True
            self._f.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest BF16 (ties to even); returns the
    uint16 bit patterns. NaN stays NaN (quiet), infinities stay infinite."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounding = (bits >> 16) & np.uint32(1)
    rounding += np.uint32(0x7FFF)
    out = bits + rounding  # wraps only for NaN payloads, handled below
    out >>= 16
    res = out.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        res[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return res


# The reader's conversion, under the name the generator's callers know.
bf16_bits_to_f32 = bf16_to_float32
