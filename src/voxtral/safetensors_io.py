"""Zero-copy, validating reader of .safetensors files.

The `safetensors` package has no numpy view of BF16 tensors and trusts the
header; here every tensor becomes a read-only numpy view into one mmap of the
file (BF16 as uint16 bit patterns), and the header is checked against the file
before anything is handed to C code: offsets inside the file, sizes that match
shape x dtype, no overlaps.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path

import numpy as np

from .errors import CheckpointError

# safetensors dtype -> numpy dtype (BF16 kept as raw uint16 bit patterns).
_DTYPES = {
    "BF16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 values of BF16 bit patterns (uint16): exact, the one place
    this conversion is written."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float_to_bf16(values: np.ndarray, rows_per_block: int = 1024) -> tuple[np.ndarray, bool, bool]:
    """BF16 bit patterns (uint16) of F32 or F16 values, rounded to nearest even;
    whether every value was exactly representable (nothing was rounded); and
    whether every value was finite. Converted in row blocks: no float32 copy
    of a whole large tensor."""
    out = np.empty(values.shape, dtype=np.uint16)
    exact = finite = True
    src = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)
    dst = out.reshape(src.shape)
    for start in range(0, src.shape[0], rows_per_block):
        bits = np.ascontiguousarray(src[start : start + rows_per_block], dtype=np.float32).view(np.uint32)
        finite = finite and not ((bits & 0x7F800000) == 0x7F800000).any()
        exact = exact and not (bits & 0xFFFF).any()
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round half to even
        dst[start : start + rows_per_block] = rounded.astype(np.uint16)
    return out, exact, finite


class SafetensorsFile:
    """One .safetensors file, memory-mapped. ``tensor(name)`` is zero-copy."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise CheckpointError(f"{self.path}: truncated safetensors file ({size} bytes)")
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot open ({exc})") from None
        self.size = size
        header_len = int.from_bytes(self._mmap[:8], "little")
        if header_len > min(_MAX_HEADER, size - 8):
            raise CheckpointError(
                f"{self.path}: header length {header_len} exceeds the file ({size} bytes): truncated or not safetensors"
            )
        try:
            header = json.loads(bytes(self._mmap[8 : 8 + header_len]).decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge numbers, deep nesting
            raise CheckpointError(f"{self.path}: header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict):
            raise CheckpointError(f"{self.path}: __metadata__ is not a JSON object")
        self._data_start = 8 + header_len
        data_size = size - self._data_start
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int, str]] = {}
        spans = []
        for name, info in header.items():
            if not isinstance(info, dict):
                raise CheckpointError(f"{self.path}: tensor {name}: malformed header entry")
            dtype_name = info.get("dtype")
            shape = info.get("shape")
            offsets = info.get("data_offsets")
            if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
                raise CheckpointError(f"{self.path}: tensor {name}: unsupported dtype {dtype_name!r}")
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise CheckpointError(f"{self.path}: tensor {name}: malformed shape {shape!r}")
            if (
                not isinstance(offsets, list)
                or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            ):
                raise CheckpointError(f"{self.path}: tensor {name}: malformed data_offsets {offsets!r}")
            begin, end = offsets
            dtype = _DTYPES[dtype_name]
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a huge shape cannot overflow
            if not (0 <= begin <= end):
                raise CheckpointError(f"{self.path}: tensor {name}: data_offsets {offsets} are reversed")
            if end > data_size:
                raise CheckpointError(
                    f"{self.path}: tensor {name}: data ends at byte {end} but the file holds {data_size} data bytes "
                    "(truncated file?)"
                )
            if end - begin != nbytes:
                raise CheckpointError(
                    f"{self.path}: tensor {name}: {end - begin} bytes for shape {shape} {dtype_name} "
                    f"(expected {nbytes})"
                )
            self._entries[name] = (dtype, tuple(shape), begin, end, dtype_name)
            spans.append((begin, end, name))
        spans.sort()
        for (_, e0, n0), (b1, e1, n1) in zip(spans, spans[1:], strict=False):
            if b1 < e0 and e1 > b1:
                raise CheckpointError(f"{self.path}: tensors {n0} and {n1} overlap in the file")

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype_name(self, name: str) -> str:
        return self._entries[name][4]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def tensor(self, name: str) -> np.ndarray:
        """Read-only view of the tensor's bytes (BF16 as uint16). No copy unless misaligned."""
        try:
            dtype, shape, begin, end, _ = self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name}") from None
        count = (end - begin) // dtype.itemsize
        offset = self._data_start + begin
        if offset % dtype.itemsize:
            # Misaligned data would make C kernels read unaligned elements: copy once.
            arr = np.frombuffer(self._mmap[offset : offset + (end - begin)], dtype=dtype, count=count).copy()
            arr.flags.writeable = False
        else:
            arr = np.frombuffer(self._mmap, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape)


def release_pages(arr: np.ndarray) -> None:
    """Let the kernel drop this process's mapping of the file pages under
    ``arr`` (a tensor view of a mapped file); they are read again from the
    page cache if touched. Streaming passes over a whole checkpoint call it
    after each tensor, so their resident memory stays about one tensor
    instead of growing to the file's size. No-op for other arrays."""
    owner = arr
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    if owner is None or not hasattr(mmap, "MADV_DONTNEED") or arr.nbytes == 0:
        return
    start = arr.ctypes.data - np.frombuffer(owner, dtype=np.uint8).ctypes.data
    begin = start - start % mmap.PAGESIZE
    end = min(len(owner), start + arr.nbytes)
    try:
        owner.madvise(mmap.MADV_DONTNEED, begin, end - begin)
    except (OSError, ValueError):
        pass  # only an optimisation
