"""``python -m voxtral quantize SRC DST --type q8_0|q4_0|q4_k``: a BF16
checkpoint (either layout) -> a quantized model directory ``DST`` holding
``model.gguf`` and a copy of ``tekken.json``; and the cache behind
``voxtral.load(..., quant=TYPE)``.

The recipe (recorded in the file as JSON under ``voxtral.recipe``):
- the chosen type for the 2-D linear weights of the encoder layers and the
  decoder layers (wq wk wv wo w1 w2 w3) and of the adapter (2 matrices);
- q8_0 for the tied token embedding / LM head, whatever the type
  (``--embeddings`` overrides it);
- everything else as in the source: the conv stem and ada-norm matrices BF16,
  norms and biases F32 (exact copies of the source values).
Tensors keep their Mistral-native names; from the Hugging Face layout the
q/k rows are put back in the native (interleaved RoPE) order.

The conversion streams tensor by tensor (the embedding in row chunks), so
memory stays around one BF16 tensor plus a chunk's temporaries, and it is
atomic: everything goes to a temporary sibling directory renamed at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import _kernels, gguf_io, interrupts
from .config import to_params_dict
from .errors import CheckpointError, ModelFileError, UsageError, VoxtralError
from .layout import GGUF_FILE, detect_layout
from .qformats import BLOCK, QTYPES, row_bytes
from .safetensors_io import release_pages
from .weights import is_linear_key, load_weights, native_names, weights_by_key

DEFAULT_EMBEDDINGS = "q8_0"
EMBEDDING_TYPES = (*QTYPES, "bf16")
CACHE_DIR_NAME = ".voxtral-quant"

_CHUNK_WEIGHTS = 1 << 20  # weights per piece written (bounded temporaries)
_QUANT_CHUNK_WEIGHTS = 1 << 24  # weights per quantized piece: 32 MB of BF16 in, at most 17 MB out


# ---------------------------------------------------------------------------
# Recipe


def tensor_type(key: str, ndim: int, qtype: str, embeddings: str) -> str:
    """The stored type of internal tensor ``key`` under the recipe."""
    if is_linear_key(key):
        return qtype
    if key == "tok_embeddings":
        return embeddings
    return "bf16" if ndim >= 2 else "f32"


def recipe(qtype: str, embeddings: str) -> dict:
    return {
        "linear": qtype,
        "linear_tensors": "encoder and decoder layers wq wk wv wo w1 w2 w3; adapter 0 and 2",
        "tok_embeddings": embeddings,
        "other_matrices": "bf16 (conv stem, ada-norm)",
        "vectors": "f32 (norms, biases)",
        "qk_rows": "native (interleaved RoPE)",
    }


def _check_types(qtype: str, embeddings: str) -> None:
    if qtype not in QTYPES:
        raise UsageError(f"unknown quantization type {qtype!r} (choose from {', '.join(QTYPES)})")
    if embeddings not in EMBEDDING_TYPES:
        raise UsageError(f"unknown embeddings type {embeddings!r} (choose from {', '.join(EMBEDDING_TYPES)})")


# ---------------------------------------------------------------------------
# Source identity


def source_files(model_dir: Path, layout: str) -> list[Path]:
    """The files a checkpoint's model is made of (weights, config, tokenizer)."""
    if layout == "native":
        names = ["consolidated.safetensors", "params.json", "tekken.json"]
    else:
        names = ["config.json", "model.safetensors.index.json", "preprocessor_config.json", "tekken.json"]
        names += sorted(p.name for p in model_dir.glob("model*.safetensors"))
    return [model_dir / n for n in names if (model_dir / n).is_file()]


def fingerprint(model_dir: Path, layout: str) -> list[list]:
    """[name, size, mtime_ns] of each source file: changes when any is replaced."""
    out = []
    for p in source_files(model_dir, layout):
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def weight_files(model_dir: Path, layout: str) -> list[Path]:
    """The source files whose sha256 a quantized model records."""
    return [p for p in source_files(model_dir, layout) if p.suffix == ".safetensors"]


def weight_sha256(model_dir: Path, layout: str, stop: threading.Event | None = None) -> dict[str, str]:
    """sha256 of each source weight file (as ``sha256sum`` prints it), read in
    pieces; returns early (incomplete) once ``stop`` is set."""
    out = {}
    for p in weight_files(model_dir, layout):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while piece := f.read(1 << 22):
                if stop is not None and stop.is_set():
                    return out
                h.update(piece)  # releases the GIL: runs beside the quantizer
        out[p.name] = h.hexdigest()
    return out


def _sha256_json(digests: dict[str, str]) -> str:
    return json.dumps(digests, sort_keys=True)


# ---------------------------------------------------------------------------
# Conversion


def _native_qk_rows(t: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Hugging Face rotate-half row order -> native interleaved order, per head:
    HF row h*hd + s*hd/2 + j holds native row h*hd + 2j + s."""
    rest = t.shape[1:]
    return np.ascontiguousarray(t.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(t.shape))


def _native_order(cfg, key: str, arr: np.ndarray) -> np.ndarray:
    if cfg.rope_style != "half":
        return arr
    parts = key.split(".")
    if len(parts) != 3 or parts[2] not in ("wq", "bq", "wk"):
        return arr
    stack = cfg.encoder if parts[0] == "enc" else cfg.decoder
    heads = stack.n_kv_heads if parts[2] == "wk" else stack.n_heads
    return _native_qk_rows(arr, heads, stack.head_dim)


def _write_tensor(
    writer: gguf_io.GGUFStreamWriter, name: str, arr: np.ndarray, ttype: str, on_rows: Callable[[int], None]
) -> None:
    """Stream one tensor: quantized or BF16 matrices in row chunks, vectors whole."""
    if ttype == "f32":
        writer.write(np.asarray(arr, dtype="<f4"))
        on_rows(arr.shape[0])
        return
    if arr.dtype != np.uint16:
        raise CheckpointError(f"tensor {name}: expected BF16 bits, got {arr.dtype}")
    rows = arr.shape[0]
    per_row = int(np.prod(arr.shape[1:]))
    chunk_weights = _CHUNK_WEIGHTS if ttype == "bf16" else _QUANT_CHUNK_WEIGHTS
    step = max(1, chunk_weights // max(per_row, 1))
    out = None
    for r0 in range(0, rows, step):
        chunk = arr[r0 : r0 + step]
        if ttype == "bf16":
            writer.write(chunk)
        else:
            # the C quantizer (all threads) reads the BF16 bits straight from the mapping
            if out is None or out.shape[0] != chunk.shape[0]:
                out = np.empty((chunk.shape[0], row_bytes(ttype, per_row)), dtype=np.uint8)
            try:
                rows2d = np.ascontiguousarray(chunk).reshape(chunk.shape[0], per_row)
                writer.write(_kernels.quantize_rows(rows2d, ttype, out=out))
            except ValueError as exc:
                raise CheckpointError(f"tensor {name}: {exc}") from None
        release_pages(chunk)  # resident memory stays about one chunk, even for the embedding
        on_rows(chunk.shape[0])


def _progress_printer(enabled: bool, label: str) -> Callable[[float, str], None]:
    last = [0.0]

    def show(frac: float, name: str) -> None:
        now = time.monotonic()
        if not enabled or (now - last[0] < 0.2 and frac < 1.0):
            return
        last[0] = now
        sys.stderr.write(f"\r{label} {frac * 100:5.1f}%  {name[-60:]:<60}")
        if frac >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def quantize_model(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    qtype: str,
    *,
    embeddings: str = DEFAULT_EMBEDDINGS,
    force: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> Path:
    """Convert the BF16 checkpoint in ``src`` to the quantized model directory
    ``dst`` (``model.gguf`` + ``tekken.json``). Returns ``dst``.
    ``progress(fraction, tensor_name)`` is called as tensors are written."""
    from .tokenizer import TekkenTokenizer

    _check_types(qtype, embeddings)
    src, dst = Path(src), Path(os.path.abspath(dst))  # absolute: "." has a name and a parent to rename in
    layout = detect_layout(src)
    if layout == "gguf":
        raise UsageError(f"{src} is already a quantized model; quantize its BF16 checkpoint instead")
    if dst.exists() or dst.is_symlink():
        if not force:
            raise UsageError(f"{dst} already exists (use --force to replace it)")
        if dst.is_symlink() or not dst.is_dir():
            raise UsageError(f"{dst} exists and is not a directory")
        s, d = src.resolve(), dst.resolve()
        if s == d or d in s.parents:
            raise UsageError(f"{dst} holds the source checkpoint; refusing to replace it")
        _check_replaceable(dst)

    tokenizer = TekkenTokenizer.from_file(src / "tekken.json")
    cfg, weights, _ = load_weights(src, audio_section=tokenizer.audio_config)
    names = native_names(cfg)
    tensors = weights_by_key(cfg, weights)
    plan = []
    for key, arr in tensors.items():
        ttype = tensor_type(key, arr.ndim, qtype, embeddings)
        if ttype in BLOCK and arr.shape[-1] % BLOCK[ttype][0]:
            raise UsageError(
                f"{ttype} needs rows whose length is a multiple of {BLOCK[ttype][0]}; "
                f"{names[key]} has {arr.shape[-1]} columns (choose another --type)"
            )
        plan.append((key, names[key], arr, ttype))

    reserved = {p.name: "0" * hashlib.sha256().digest_size * 2 for p in weight_files(src, layout)}
    metadata = {
        "general.name": f"Voxtral Mini 4B Realtime {qtype}",
        "general.quantization_version": 2,  # GGML_QNT_VERSION of these block layouts
        gguf_io.KEY_FORMAT_VERSION: gguf_io.FORMAT_VERSION,
        gguf_io.KEY_PARAMS_JSON: json.dumps(to_params_dict(cfg), indent=2),
        # hashed while the tensors are converted (the same pages, read once
        # into the page cache), then written over this same-length placeholder
        gguf_io.KEY_SOURCE_SHA256: _sha256_json(reserved),
        gguf_io.KEY_SOURCE_FINGERPRINT: json.dumps(fingerprint(src, layout)),
        gguf_io.KEY_QUANT_TYPE: qtype,
        gguf_io.KEY_RECIPE: json.dumps(recipe(qtype, embeddings), sort_keys=True),
    }

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the result private
    stop = threading.Event()
    hashing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voxtral-sha256")
    try:
        digests = hashing.submit(weight_sha256, src, layout, stop)
        writer = gguf_io.GGUFStreamWriter(tmp / GGUF_FILE, metadata)
        try:
            for _, name, arr, ttype in plan:
                writer.add_tensor(name, arr.shape, ttype)
            writer.begin()
            total = sum(int(arr.size) for *_, arr, _ in plan) or 1
            done = 0
            for key, name, arr, ttype in plan:
                per_row = int(arr.size // max(arr.shape[0], 1))

                def on_rows(n, name=name, per_row=per_row):
                    nonlocal done
                    done += n * per_row
                    if progress is not None:
                        progress(done / total, name)

                interrupts.check()
                source = arr
                arr = _native_order(cfg, key, arr)
                _write_tensor(writer, name, arr, ttype, on_rows)
                writer.end_tensor()
                release_pages(source)
            if progress is not None and not digests.done():
                progress(1.0, "sha256 of the source files")
            writer.replace_metadata(gguf_io.KEY_SOURCE_SHA256, _sha256_json(reserved), _sha256_json(digests.result()))
            writer.close()
        except BaseException:
            writer.abort()
            raise
        shutil.copyfile(src / "tekken.json", tmp / "tekken.json")
        interrupts.check()  # the last chance to end an interrupted run before its output lands
        _replace_dir(tmp, dst)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelFileError(f"{dst}: cannot write the quantized model ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        stop.set()  # an interrupted conversion does not wait for the whole hash
        hashing.shutdown(wait=True)
    return dst


def _human(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


QUANTIZED_FILES = frozenset({GGUF_FILE, "tekken.json"})  # what quantize_model writes, and nothing else


def _check_replaceable(dst: Path) -> None:
    """--force replaces an empty directory or one that holds a previous
    quantized model (only its files); anything else may be someone's data."""
    names = {p.name for p in dst.iterdir()}
    if names and (GGUF_FILE not in names or not names <= QUANTIZED_FILES):
        other = sorted(names - QUANTIZED_FILES)[:3]
        raise UsageError(
            f"{dst} is not a quantized model directory (it holds {', '.join(other) or 'no ' + GGUF_FILE}"
            f"{', ...' if len(names - QUANTIZED_FILES) > 3 else ''}); --force replaces only a "
            "previous quantize output: choose another DST"
        )


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Put the finished ``tmp`` at ``dst``: a rename, so ``dst`` is never half
    written; the old directory is moved aside first and restored if that fails."""
    if not dst.exists():
        os.rename(tmp, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    try:
        os.rename(dst, old / "x")
        try:
            os.rename(tmp, dst)
        except BaseException:
            os.rename(old / "x", dst)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------
# The cache behind load(..., quant=TYPE)


def _cache_candidates(model_dir: Path, qtype: str) -> list[Path]:
    """Next to the model first, then under $XDG_CACHE_HOME (or ~/.cache),
    keyed by the model directory's path."""
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [model_dir / CACHE_DIR_NAME / qtype, Path(xdg) / "voxtral" / "quant" / key / qtype]


def _dir_writable(d: Path) -> bool:
    while not d.exists():  # the nearest existing ancestor decides
        d = d.parent
    return os.access(d, os.W_OK | os.X_OK)


def _is_fresh(qdir: Path, qtype: str, fp: list) -> bool:
    if not ((qdir / GGUF_FILE).is_file() and (qdir / "tekken.json").is_file()):
        return False
    try:
        f = gguf_io.GGUFFile(qdir / GGUF_FILE)
        return (
            f.get_str(gguf_io.KEY_QUANT_TYPE) == qtype
            and f.get_json(gguf_io.KEY_SOURCE_FINGERPRINT) == fp
            and f.get_json(gguf_io.KEY_RECIPE) == recipe(qtype, DEFAULT_EMBEDDINGS)
        )
    except VoxtralError:
        return False


def cached_quantized(model_dir: str | os.PathLike, qtype: str, on_status: Callable[[str], None] | None = None) -> Path:
    """The directory of ``model_dir`` quantized to ``qtype`` (default recipe),
    quantizing it first if no cache entry matches the source's current
    fingerprint (file names, sizes, mtimes)."""
    _check_types(qtype, DEFAULT_EMBEDDINGS)
    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    if layout == "gguf":
        raise UsageError(f"{model_dir} is already a quantized model")
    fp = fingerprint(model_dir, layout)
    candidates = _cache_candidates(model_dir, qtype)
    for qdir in candidates:
        if _is_fresh(qdir, qtype, fp):
            return qdir
    target = next((c for c in candidates if _dir_writable(c.parent)), None)
    if target is None:
        raise ModelFileError(
            f"no writable place for the {qtype} cache of {model_dir} (tried {', '.join(map(str, candidates))})"
        )
    if on_status is not None:
        on_status(f"quantizing {model_dir.name or model_dir} to {qtype} once, into {target} (this takes a while)")
    quantize_model(model_dir, target, qtype, force=True)
    return target


# ---------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voxtral quantize",
        description="Quantize a Voxtral BF16 checkpoint (Mistral-native or Hugging Face layout) into "
        "DST/model.gguf (+ tekken.json), GGML block formats in a GGUF file.",
    )
    p.add_argument("src", metavar="SRC", help="the BF16 model directory")
    p.add_argument("dst", metavar="DST", help="the quantized model directory to create")
    p.add_argument("--type", required=True, choices=QTYPES, help="type of the linear weights")
    p.add_argument(
        "--embeddings",
        choices=EMBEDDING_TYPES,
        default=DEFAULT_EMBEDDINGS,
        help=f"type of the token embedding / LM head (default {DEFAULT_EMBEDDINGS})",
    )
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or status on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interrupts.install()  # SIGTERM removes the temporaries as Ctrl+C does
    try:
        from .hub import resolve_model_dir

        src = resolve_model_dir(args.src, download=False)
        t0 = time.monotonic()
        show = _progress_printer(not args.quiet and sys.stderr.isatty(), f"quantize {args.type}")
        dst = quantize_model(src, args.dst, args.type, embeddings=args.embeddings, force=args.force, progress=show)
        if not args.quiet:
            size = (dst / GGUF_FILE).stat().st_size
            print(
                f"voxtral: wrote {dst / GGUF_FILE} ({_human(size)}, {args.type}) in {time.monotonic() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        return 0
    except VoxtralError as exc:
        print(f"voxtral: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("voxtral: interrupted", file=sys.stderr)
        return interrupts.exit_code(exc)


__all__ = ["quantize_model", "cached_quantized", "tensor_type", "recipe", "fingerprint", "main"]
