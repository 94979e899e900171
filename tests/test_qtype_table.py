"""The C kernel table of weight types is the one source of their facts:
Python's views of it agree with GGML's own numbers (the gguf package) and
with the names the CLI knows without loading the extension."""

from __future__ import annotations

import gguf

from voxtral import _kernels as K
from voxtral.modes import QTYPES
from voxtral.qformats import BLOCK


def test_table_matches_gguf_and_modes():
    table = K.qtypes()
    assert tuple(table) == QTYPES
    for name, (_qid, per, nbytes, repacked) in table.items():
        gt = gguf.GGMLQuantizationType[name.upper()]
        assert (per, nbytes) == gguf.GGML_QUANT_SIZES[gt]
        assert BLOCK[name] == (per, nbytes)
        assert repacked == (name in K.repacked_qtypes())
    assert set(K.repacked_qtypes()) == {"q8_0", "q4_0", "q4_k"}
