"""A copy of a quantized model directory whose ``[STREAMING_PAD]`` embedding row is
scaled by a gain: the GGUF counterpart of the checkpoint generator's
``--pad-gain`` (python -m voxtral.testing.checkpoint), without regenerating and
re-quantizing 8.9 GB. The embedding is tied to the LM head, so the gain raises
the pad logit's magnitude and a random model's greedy output becomes a mix of
pads and text, as a trained model's is: speed figures of drafted decoding on
real-size weights are taken from such a copy (and say so).

    python bench/pad_gain_gguf.py SRC_DIR DST_DIR --gain 4

The row is scaled in place in the copy: for Q8_0 each block's f16 scale is
multiplied by the gain (exactly the dequantized row x gain, up to f16 rounding);
BF16/F16/F32 rows are multiplied element by element.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

EMBEDDING = "mm_streams_embeddings.embedding_module.tok_embeddings.weight"


def scale_row(gguf_path: Path, row: int, gain: float) -> None:
    from gguf import GGUFReader

    from voxtral.qformats import BLOCK

    tensor = next((t for t in GGUFReader(gguf_path).tensors if t.name == EMBEDDING), None)
    if tensor is None:
        raise SystemExit(f"{gguf_path}: no tensor {EMBEDDING}")
    width, rows = (int(x) for x in tensor.shape)
    if not 0 <= row < rows:
        raise SystemExit(f"row {row} outside the embedding's {rows} rows")
    kind = tensor.tensor_type.name
    row_bytes = tensor.n_bytes // rows
    data = np.memmap(
        gguf_path, dtype=np.uint8, mode="r+", offset=tensor.data_offset + row * row_bytes, shape=(row_bytes,)
    )
    if kind == "Q8_0":
        per, nbytes = BLOCK["q8_0"]  # a block: an f16 scale, then per int8 weights
        blocks = data.reshape(width // per, nbytes)
        scales = blocks[:, :2].copy().view(np.float16).astype(np.float32) * np.float32(gain)
        blocks[:, :2] = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    elif kind == "BF16":
        bits = data.view(np.uint16).astype(np.uint32) << 16
        scaled = bits.view(np.float32) * np.float32(gain)
        data.view(np.uint16)[:] = (scaled.view(np.uint32) >> 16).astype(
            np.uint16
        )  # truncation is fine for a test model
    elif kind in ("F16", "F32"):
        view = data.view(np.float16 if kind == "F16" else np.float32)
        view[:] = view * gain
    else:
        raise SystemExit(f"{EMBEDDING} is {kind}: only Q8_0, BF16, F16 and F32 rows are scaled here")
    data.flush()


def main(argv=None) -> int:
    from voxtral.tokenizer import TekkenTokenizer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--gain", type=float, required=True)
    a = p.parse_args(argv)
    if a.dst.exists():
        raise SystemExit(f"{a.dst} exists")
    shutil.copytree(a.src, a.dst)
    pad = TekkenTokenizer.from_file(a.dst / "tekken.json").streaming_pad_id
    for path in a.dst.glob("*.gguf"):
        scale_row(path, pad, a.gain)
    print(f"{a.dst}: [STREAMING_PAD] (id {pad}) embedding row x {a.gain}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
