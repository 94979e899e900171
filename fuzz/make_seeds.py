"""Write the seed corpus (``fuzz/corpus/``) from the checkpoint generator:
``python -m fuzz.make_seeds``. The seeds are small valid inputs for every
target; the fuzzer's own discoveries go to a working directory, not here."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np

from voxtral.testing.checkpoint import (
    NAMED_SPECIAL_TOKENS,
    build_tekken,
    hf_config_json,
    params_json,
    preprocessor_config_json,
    resolve_dims,
)
from voxtral.testing.safetensors_writer import SafetensorsWriter, TensorSpec

CORPUS = Path(__file__).resolve().parent / "corpus"


def _wav(rate: int, channels: int, sampwidth: int, n: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(bytes((i * 37) & 0xFF for i in range(n * channels * sampwidth)))
    return buf.getvalue()


def _float_wav(rate: int, n: int) -> bytes:
    data = (np.sin(np.arange(n) / 5.0) * 0.5).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def small_tekken() -> dict:
    """A valid tekken.json with 40 special and 100 base tokens (small, so
    that the fuzzer runs fast; the 256 single bytes are checked only up to the
    vocabulary's size)."""
    full = build_tekken(2000)
    n_special, n_base = 40, 100
    full["config"].update(
        default_vocab_size=n_special + n_base, default_num_special_tokens=n_special, num_vocab_tokens=n_base
    )
    full["vocab"] = full["vocab"][:n_base]
    full["special_tokens"] = [t for t in full["special_tokens"] if t["rank"] < n_special]
    assert {t["rank"] for t in full["special_tokens"]} >= set(k for k in NAMED_SPECIAL_TOKENS if k < n_special)
    return full


def main() -> None:
    d = resolve_dims("tiny")
    seeds = CORPUS / "seeds"
    seeds.mkdir(parents=True, exist_ok=True)
    params, config = params_json(d), hf_config_json(d)
    tekken = small_tekken()
    (seeds / "params.json").write_text(json.dumps(params, indent=1))
    (seeds / "config.json").write_text(json.dumps(config, indent=1))
    (seeds / "preprocessor_config.json").write_text(json.dumps(preprocessor_config_json(d), indent=1))
    (seeds / "tekken_small.json").write_text(json.dumps(tekken))

    wavs = {
        "s16_16k_mono": _wav(16000, 1, 2, 400),
        "u8_8k_stereo": _wav(8000, 2, 1, 300),
        "s24_44k_mono": _wav(44100, 1, 3, 200),
        "s32_48k_mono": _wav(48000, 1, 4, 200),
        "f32_16k": _float_wav(16000, 300),
    }
    for name, data in wavs.items():
        for target, prefix in (("wav", b""), ("stdin", b"\x00\x02\x40")):
            out = CORPUS / target
            out.mkdir(exist_ok=True)
            (out / name).write_bytes(prefix + data)
    (CORPUS / "stdin" / "raw_s16").write_bytes(b"\x00\x02\x10" + bytes(range(256)) * 4)

    st = CORPUS / "safetensors"
    st.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.safetensors"
        specs = [TensorSpec("a.weight", "BF16", (4, 3)), TensorSpec("b", "F32", (5,)), TensorSpec("c", "I64", (0,))]
        w = SafetensorsWriter(path, specs, {"format": "pt"})
        w.write("a.weight", np.arange(12, dtype=np.uint16).reshape(4, 3))
        w.write("b", np.ones(5, dtype=np.float32))
        w.close()
        (st / "three_tensors").write_bytes(path.read_bytes())

    cfg = CORPUS / "config"
    cfg.mkdir(exist_ok=True)
    (cfg / "params").write_bytes(b"\x00\x00" + json.dumps(params).encode())
    (cfg / "params_mutated").write_bytes(b"\x00\x01" + bytes(range(64)))
    (cfg / "hf").write_bytes(b"\x81\x00" + json.dumps(config).encode())
    (cfg / "hf_mutated").write_bytes(b"\x82\x01" + bytes(range(64)))

    tk = CORPUS / "tekken"
    tk.mkdir(exist_ok=True)
    (tk / "mutated").write_bytes(b"\x01" + bytes(range(128)))
    (tk / "small_as_is").write_bytes(b"\x00" + json.dumps(tekken).encode())

    sm = CORPUS / "stream"
    sm.mkdir(exist_ok=True)
    (sm / "s16k").write_bytes(bytes([2, 1, 3]) + bytes((i * 7) & 0xFF for i in range(2000)))


if __name__ == "__main__":
    main()
