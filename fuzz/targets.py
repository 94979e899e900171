"""Fuzz targets: one function per input reader, each taking the fuzzer's bytes.

The contract every target checks: bad input gets a ``voxtral.VoxtralError``
(a typed, one-line error), never another exception, a crash or a hang.
Anything else escapes ``run_one`` and the fuzzer reports it with the input.

``KNOWN`` lists untyped exceptions already reported, each with the xfail
test that reproduces it (tests/test_fuzz.py): the fuzzer counts them and
goes on (``--strict`` stops on them too), so that a long run looks for new
bugs instead of finding the same one again. Remove an entry once its fix is
merged: the strict xfail test will then fail until it is removed as well.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import atheris

SEED_DIR = Path(__file__).resolve().parent / "corpus"

# Rates the CLI and the API are meant to accept (the --raw-rate bounds); the
# stream target also tries rates outside them, which must be refused cleanly.
RATES = (8000, 11025, 16000, 22050, 44100, 48000, 96000)


@dataclass
class Known:
    """An untyped exception already reported: its type, the function (and
    file) it is raised in, and the test that reproduces it."""

    exc: str
    function: str
    filename: str
    test: str
    line: str = ""  # a piece of the raising source line, when the function has several bugs


# Filled from the long runs; each entry has a strict xfail test.
KNOWN: list[Known] = []  # every untyped exception found so far is fixed (tests/test_fuzz.py keeps the reproducers)


class KnownInput(Exception):
    """Raised by a target, before running it, for an input known to crash,
    hang or exhaust memory (no exception to classify then)."""

    def __init__(self, test: str):
        super().__init__(test)
        self.test = test


STRICT = False


def known_input(test: str) -> None:
    """Skip this input (counted under ``test``) unless running strict."""
    if not STRICT:
        raise KnownInput(test)


@dataclass
class Stats:
    typed: int = 0
    known: dict[str, int] = field(default_factory=dict)


STATS = Stats()


def _where(exc: BaseException) -> tuple[str, str, str]:
    # The deepest frame in voxtral: the code that let the exception through
    # (numpy or json may be where it was raised).
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if f"{os.sep}voxtral{os.sep}" in f.filename]
    last = ours[-1] if ours else (tb[-1] if tb else None)
    return (last.name, os.path.basename(last.filename), last.line or "") if last else ("?", "?", "")


def classify(exc: BaseException) -> Known | None:
    function, filename, line = _where(exc)
    for k in KNOWN:
        if (type(exc).__name__, k.function, k.filename) == (k.exc, function, filename) and k.line in line:
            return k
    return None


def run_one(target: Callable[[bytes], None], data: bytes, strict: bool = False) -> None:
    """Run ``target`` on ``data``; typed errors are the expected outcome of bad
    input, known issues are counted unless ``strict``; anything else raises."""
    from voxtral.errors import VoxtralError

    global STRICT
    STRICT = strict
    try:
        target(data)
    except VoxtralError:
        STATS.typed += 1
    except KnownInput as k:
        STATS.known[k.test] = STATS.known.get(k.test, 0) + 1
    except Exception as exc:  # the point is to see everything else
        known = None if strict else classify(exc)
        if known is None:
            raise
        STATS.known[known.test] = STATS.known.get(known.test, 0) + 1


# ---------------------------------------------------------------------------
# Scratch files: the loaders read paths, so inputs go to a RAM-backed file.

_SCRATCH = Path(tempfile.mkdtemp(prefix="voxtral-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _scratch(name: str, data: bytes) -> Path:
    path = _SCRATCH / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------
# Structure-aware JSON mutation: random values of every type put at random
# places of a valid document find type confusions that byte flips rarely reach.


def _random_value(fdp: atheris.FuzzedDataProvider) -> Any:
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.PickValueInList([0, -1, 1, 2, 3, 2**31, 2**63, 2**70, -(2**70), 10**400 // 10**300])
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    if kind == 3:
        return fdp.PickValueInList([math.nan, math.inf, -math.inf, 0.5, -0.0, 1e-300, 1e300])
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if kind == 5:
        return fdp.PickValueInList([None, True, False])
    if kind == 6:
        return []
    if kind == 7:
        return {}
    if kind == 8:
        return [fdp.ConsumeInt(4) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 9:
        return {"a": fdp.ConsumeInt(2)}
    if kind == 10:
        return fdp.ConsumeBytes(8).decode("latin-1")
    return "BF16"


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):  # long lists (a vocabulary): the head is enough
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(doc: Any, fdp: atheris.FuzzedDataProvider, max_edits: int = 4) -> Any:
    """A copy of ``doc`` with a few values replaced, keys deleted or added."""
    doc = json.loads(json.dumps(doc))
    for _ in range(fdp.ConsumeIntInRange(1, max_edits)):
        paths = _paths(doc)
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        if not path:
            if fdp.ConsumeBool():
                return _random_value(fdp)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = fdp.ConsumeIntInRange(0, 3)
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            parent[fdp.ConsumeUnicodeNoSurrogates(6)] = _random_value(fdp)
        else:
            parent[path[-1]] = _random_value(fdp)
    return doc


def _json_input(data: bytes, seed: Any) -> bytes:
    """First byte even: the bytes as they are (byte-level mutation of the
    seed corpus); odd: a structured mutation of ``seed``."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    fdp = atheris.FuzzedDataProvider(data[1:])
    return json.dumps(mutate_json(seed, fdp), allow_nan=True).encode()


# ---------------------------------------------------------------------------
# Targets


def target_wav(data: bytes) -> None:
    """The WAV reader through the public entry point: ``load_audio(bytes)``."""
    from voxtral.audio import load_audio

    x = load_audio(data)
    assert x.dtype.name == "float32" and x.ndim == 1


def target_stdin(data: bytes) -> None:
    """The CLI's ``--stdin`` reader (format detection + PCM decoding), on the
    bytes as they would arrive, in random piece sizes, with the raw format and
    rate that the CLI's argument checks accept."""
    from voxtral.cli import stdin_chunks

    if len(data) < 3:
        return
    fmt = ("s16le", "s24le", "s32le", "u8", "f32le", "f64le")[data[0] % 6]
    rate = RATES[data[1] % len(RATES)]
    piece = 1 + data[2]

    class Pipe(io.RawIOBase):
        """Short reads, as from a pipe."""

        def __init__(self, payload: bytes):
            self._buf = io.BytesIO(payload)

        def readable(self):
            return True

        def read(self, n=-1):
            return self._buf.read(piece if n < 0 else min(n, piece))

    for chunk in stdin_chunks(Pipe(data[3:]), 16000, fmt, rate):
        assert chunk.dtype.name == "float32" and chunk.ndim == 1


def target_safetensors(data: bytes) -> None:
    """The safetensors header parser and tensor views."""
    from voxtral.safetensors_io import SafetensorsFile

    if data[:1] == b"\x01":  # structured: mutate the seed's header, keep its data
        seed = _seed_bytes("safetensors/three_tensors")
        n = int.from_bytes(seed[:8], "little")
        header = json.dumps(mutate_json(json.loads(seed[8 : 8 + n]), atheris.FuzzedDataProvider(data[1:]))).encode()
        data = len(header).to_bytes(8, "little") + header + seed[8 + n :]
    f = SafetensorsFile(_scratch("x.safetensors", data))
    for name in f.keys():
        f.tensor(name)


def _seed_json(name: str) -> Any:
    return json.loads((SEED_DIR / "seeds" / name).read_text(encoding="utf-8"))


_SEEDS: dict[str, Any] = {}


def _seed_bytes(name: str) -> bytes:
    if name not in _SEEDS:
        _SEEDS[name] = (SEED_DIR / name).read_bytes()
    return _SEEDS[name]


def _seed(name: str) -> Any:
    if name not in _SEEDS:
        _SEEDS[name] = _seed_json(name)
    return _SEEDS[name]


def target_config(data: bytes) -> None:
    """params.json (first byte < 128) or config.json + preprocessor_config.json."""
    from voxtral.config import from_hf_config, from_params_json

    if not data:
        return
    if data[0] < 128:
        from_params_json(_scratch("params.json", _json_input(data[1:], _seed("params.json"))))
        return
    d = _SCRATCH / "hf"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(_json_input(data[1:], _seed("config.json")))
    pre = d / "preprocessor_config.json"
    if data[0] % 2:  # with a preprocessor_config.json (valid) or without one
        pre.write_text(json.dumps(_seed("preprocessor_config.json")))
    elif pre.exists():
        pre.unlink()
    audio = _seed("tekken_small.json")["audio"] if data[0] % 4 < 2 else None
    from_hf_config(d / "config.json", audio)


def target_tekken(data: bytes) -> None:
    """tekken.json: parsing, then decoding random ids."""
    from voxtral.tokenizer import TekkenTokenizer

    tok = TekkenTokenizer.from_file(_scratch("tekken.json", _json_input(data, _seed("tekken_small.json"))))
    ids = [b % (tok.vocab_size + 2) - 1 for b in data[-16:]]  # -1 and vocab_size: out of range
    dec = tok.stream_decoder()
    for i in ids:
        dec.push(i)
    dec.flush()
    tok.decode(ids)


_MODEL = None


def _tiny_model():
    """The ``tiny`` random-weight checkpoint, generated once per process."""
    global _MODEL
    if _MODEL is None:
        import voxtral
        from voxtral.testing.checkpoint import make_checkpoint

        out = _SCRATCH / "tiny"
        if not (out / "params.json").is_file():
            make_checkpoint(out, preset="tiny", layout="native")
        _MODEL = voxtral.load(out, num_threads=1)
    return _MODEL


def target_stream(data: bytes) -> None:
    """The stream feeder: random rates (some invalid), delays, chunk sizes,
    dtypes, shapes and NaN/Inf, then finish()."""
    import numpy as np

    model = _tiny_model()
    fdp = atheris.FuzzedDataProvider(data)
    rate = fdp.PickValueInList([*RATES, None, 0, -16000, 1, 100, 16000.5, "16000", 10**9])
    delay = fdp.PickValueInList([80, 480, 2400, 0, 81, -80, 4000, 480.0, None])
    if rate in (1, 100):
        # Resampling from 1 Hz grows without bound (11 GB, then a crash), 100 Hz
        # runs for minutes: issue 8, the resampler bound in part A.
        known_input("test_fuzz.py::test_stream_absurd_rate_is_refused")
    stream = model.stream(delay, sample_rate=rate)
    dtypes = [
        np.float32,
        np.float64,
        np.float16,
        np.int16,
        np.int32,
        np.int8,
        np.uint8,
        np.bool_,
        np.complex64,
        np.int64,
        np.uint16,
    ]
    total = 0
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        n = fdp.ConsumeIntInRange(0, 4000)
        total += n
        if total > 16000:  # a second of audio at most: the target must stay fast
            break
        dtype = dtypes[fdp.ConsumeIntInRange(0, len(dtypes) - 1)]
        values = np.frombuffer(fdp.ConsumeBytes(n * 2).ljust(n * 2, b"\0"), dtype="<i2")[:n]
        chunk = (values / 32768.0).astype(dtype) if np.dtype(dtype).kind in "fc" else values.astype(dtype)
        special = fdp.ConsumeIntInRange(0, 9)
        if special == 1 and n and chunk.dtype.kind == "f":
            chunk[fdp.ConsumeIntInRange(0, n - 1)] = fdp.PickValueInList([np.nan, np.inf, -np.inf])
        elif special == 2:
            chunk = chunk.reshape(-1, 1) if fdp.ConsumeBool() else np.stack([chunk, chunk])
        elif special == 3:
            chunk = chunk.tolist()
        elif special == 4:
            chunk = chunk[::2]
        stream.feed(chunk)
        if fdp.ConsumeIntInRange(0, 7) == 0:
            stream.flush()
    stream.finish()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wav": target_wav,
    "stdin": target_stdin,
    "safetensors": target_safetensors,
    "config": target_config,
    "tekken": target_tekken,
    "stream": target_stream,
}
# Inputs larger than this add time, not coverage.
MAX_LEN = {"wav": 4096, "stdin": 4096, "safetensors": 4096, "config": 4096, "tekken": 12000, "stream": 4096}
