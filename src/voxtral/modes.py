"""The names of the approximate modes, importable without numpy (the CLI's
--help and argument checks use them before anything heavy loads)."""

QTYPES = ("q8_0", "q4_0", "q4_k")  # quantized weight formats (GGML block layouts)
KV_DTYPES = ("f32", "bf16", "int8")  # decoder KV cache storage; f32 is exact
