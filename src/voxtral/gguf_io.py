"""GGUF container for quantized models: written with ``gguf.GGUFWriter``,
read with ``gguf.GGUFReader``, so that gguf tools can list and dequantize
every tensor of a file we write.

Writing streams: the header, the metadata and the tensor table go first
(each tensor's size is known from its shape and type), then each tensor's
data is appended piece by piece, so the writer never holds more than the
piece it is given. Reading maps the file; tensors are zero-copy numpy views.

GGUF lists dimensions fastest first (ne0 = columns); here shapes are always
numpy order (rows, cols). Quantized tensors are declared by their byte shape
[rows, row_bytes], which GGUFWriter turns into the element shape.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .errors import CheckpointError, UsageError
from .qformats import BLOCK, QuantMatrix, row_bytes

ARCHITECTURE = "voxtral"
FORMAT_VERSION = 1

# Metadata keys (besides general.architecture, written by GGUFWriter).
KEY_FORMAT_VERSION = "voxtral.format_version"
KEY_PARAMS_JSON = "voxtral.params_json"
KEY_SOURCE_SHA256 = "voxtral.source_sha256"
KEY_SOURCE_FINGERPRINT = "voxtral.source_fingerprint"
KEY_QUANT_TYPE = "voxtral.quant_type"
KEY_RECIPE = "voxtral.recipe"

# Our type names <-> GGML tensor type names.
_GGML_NAMES = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k": "Q4_K", "bf16": "BF16", "f16": "F16", "f32": "F32"}
_FROM_GGML = {v: k for k, v in _GGML_NAMES.items()}


def _gguf():
    try:
        import gguf  # imported on use: only quantized models need it
    except ImportError:
        raise UsageError("quantized models need the gguf package (a dependency of voxtral): pip install gguf") from None
    return gguf


def _ggml_type(name: str):
    return _gguf().GGMLQuantizationType[_GGML_NAMES[name]]


def tensor_nbytes(shape: tuple[int, ...], ttype: str) -> int:
    """Bytes of a tensor of numpy ``shape`` stored as ``ttype``."""
    if ttype in BLOCK:
        return int(np.prod(shape[:-1], dtype=np.int64)) * row_bytes(ttype, shape[-1])
    itemsize = {"bf16": 2, "f16": 2, "f32": 4}[ttype]
    return int(np.prod(shape, dtype=np.int64)) * itemsize


class GGUFStreamWriter:
    """Declare every tensor (``add_tensor``), ``begin()``, then for each
    tensor in the declared order ``write()`` its data in one or more pieces
    and ``end_tensor()``; ``close()`` at the end."""

    def __init__(self, path: str | os.PathLike, metadata: dict[str, str | int]):
        gguf = _gguf()
        self._w = gguf.GGUFWriter(path, ARCHITECTURE)
        self._path = Path(path)
        self._kv_span = (0, 0)  # file offsets of the metadata, once begin() wrote it
        for key, value in metadata.items():
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise TypeError(f"metadata {key}: only str and int values are written, got {type(value).__name__}")
            if isinstance(value, int):
                self._w.add_uint32(key, value)
            else:
                self._w.add_string(key, value)
        self._plan: list[tuple[str, int]] = []
        self._next = 0
        self._written = 0

    def add_tensor(self, name: str, shape: tuple[int, ...], ttype: str) -> None:
        gguf = _gguf()
        nbytes = tensor_nbytes(shape, ttype)
        if ttype in BLOCK:
            byte_shape = (*shape[:-1], row_bytes(ttype, shape[-1]))
            self._w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=_ggml_type(ttype))
        elif ttype == "bf16":
            self._w.add_tensor_info(name, shape, np.dtype(np.uint16), nbytes, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            self._w.add_tensor_info(name, shape, np.dtype({"f16": np.float16, "f32": np.float32}[ttype]), nbytes)
        self._plan.append((name, nbytes))

    @property
    def _out(self):
        return self._w.fout[0]

    def _pad(self) -> None:
        align = self._w.data_alignment
        pad = -self._out.tell() % align
        if pad:
            self._out.write(b"\0" * pad)

    def begin(self) -> None:
        self._w.write_header_to_file()
        kv_start = self._out.tell()
        self._w.write_kv_data_to_file()
        self._kv_span = (kv_start, self._out.tell())
        self._w.write_ti_data_to_file()
        self._pad()

    def replace_metadata(self, key: str, old: str, new: str) -> None:
        """Overwrite string metadata ``key`` (written by begin() as ``old``)
        with ``new`` of the same UTF-8 length: for a value known only once
        the tensors are written (the source's sha256, hashed meanwhile)."""
        old_b, new_b = old.encode(), new.encode()
        if len(old_b) != len(new_b):
            raise ValueError(f"metadata {key}: the new value has {len(new_b)} bytes, the reserved one {len(old_b)}")
        key_b = key.encode()
        # a GGUF key-value: u64 key length, key, u32 type (8: string), u64 length, bytes
        entry = struct.pack("<Q", len(key_b)) + key_b + struct.pack("<IQ", 8, len(old_b)) + old_b
        lo, hi = self._kv_span
        self._out.flush()
        with open(self._path, "r+b") as f:
            f.seek(lo)
            kv = f.read(hi - lo)
            at = kv.find(entry)
            if at < 0 or kv.find(entry, at + 1) >= 0:
                raise ValueError(f"metadata {key}: the reserved value is not in the file exactly once")
            f.seek(lo + at + len(entry) - len(old_b))
            f.write(new_b)

    def current(self) -> str:
        return self._plan[self._next][0]

    def write(self, piece: np.ndarray) -> None:
        """Append bytes of the current tensor (C order, little-endian)."""
        piece = np.ascontiguousarray(piece)
        name, nbytes = self._plan[self._next]
        if self._written + piece.nbytes > nbytes:
            raise ValueError(f"{name}: more data than its declared {nbytes} bytes")
        self._out.write(memoryview(piece).cast("B"))
        self._written += piece.nbytes

    def end_tensor(self) -> None:
        name, nbytes = self._plan[self._next]
        if self._written != nbytes:
            raise ValueError(f"{name}: wrote {self._written} bytes, declared {nbytes}")
        self._pad()
        self._next += 1
        self._written = 0

    def close(self) -> None:
        """Flush to disk; every declared tensor must have been written."""
        try:
            if self._next != len(self._plan):
                raise ValueError(f"{len(self._plan) - self._next} declared tensors were not written")
            self._out.flush()
            os.fsync(self._out.fileno())
        finally:
            self._w.close()

    def abort(self) -> None:
        self._w.close()


class GGUFFile:
    """A GGUF file, memory-mapped and checked: metadata strings and integers,
    tensors as zero-copy numpy views with their type and numpy shape.
    Anything unreadable is a :class:`CheckpointError`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        gguf = _gguf()
        try:
            size = self.path.stat().st_size
            reader = gguf.GGUFReader(self.path, "r")
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: file not found") from None
        except Exception as exc:  # noqa: BLE001  a third-party parser of untrusted bytes: every failure is a bad file
            raise CheckpointError(f"{self.path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        self._reader = reader
        self.tensors: dict[str, tuple[str, tuple[int, ...], np.ndarray]] = {}
        for t in reader.tensors:
            ggml_name = getattr(t.tensor_type, "name", str(t.tensor_type))
            ttype = _FROM_GGML.get(ggml_name)
            if ttype is None:
                raise CheckpointError(f"{self.path}: tensor {t.name} has type {ggml_name}, not one voxtral uses")
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))
            nbytes = tensor_nbytes(shape, ttype) if (ttype not in BLOCK or shape[-1] % BLOCK[ttype][0] == 0) else -1
            if nbytes != int(t.n_bytes) or t.data.nbytes != nbytes or t.data_offset + nbytes > size:
                raise CheckpointError(
                    f"{self.path}: tensor {t.name} ({ggml_name} {list(shape)}) lies outside the file "
                    "or has an inconsistent size: truncated or corrupt"
                )
            data = t.data
            if ttype == "bf16":
                data = data.view(np.uint16).reshape(shape)
            self.tensors[t.name] = (ttype, shape, data)

    def quant_matrix(self, name: str) -> QuantMatrix:
        """Tensor ``name`` (a quantized [rows, cols] matrix) for the kernels:
        repacked at load where the CPU has kernels for the interleaved layout
        (VOXTRAL_REPACK=0 keeps the GGML layout), the copy then replacing the
        mapped pages in memory (they stay in the file for row lookups)."""
        ttype, shape, data = self.tensors[name]
        m = QuantMatrix(ttype, data, shape[0], shape[1])
        if os.environ.get("VOXTRAL_REPACK", "1") == "0":
            return m
        packed = m.repacked()
        if packed is not m:
            from . import _kernels

            _kernels.drop_file_pages(data)
        return packed

    def _field(self, key: str):
        field = self._reader.get_field(key)
        if field is None:
            raise CheckpointError(f"{self.path}: metadata {key} is missing (not a voxtral GGUF file?)")
        return field

    def get_str(self, key: str) -> str:
        gguf = _gguf()
        field = self._field(key)
        if field.types != [gguf.GGUFValueType.STRING]:
            raise CheckpointError(f"{self.path}: metadata {key} must be a string")
        try:
            return field.contents()
        except (UnicodeDecodeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{self.path}: metadata {key} is unreadable ({exc})") from None

    def get_int(self, key: str) -> int:
        gguf = _gguf()
        field = self._field(key)
        ints = {
            gguf.GGUFValueType[n] for n in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
        }
        if len(field.types) != 1 or field.types[0] not in ints:
            raise CheckpointError(f"{self.path}: metadata {key} must be an integer")
        return int(field.contents())

    def get_json(self, key: str):
        text = self.get_str(key)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: metadata {key} is not valid JSON ({exc})") from None

    def has(self, key: str) -> bool:
        return self._reader.get_field(key) is not None
