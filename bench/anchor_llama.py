"""llama.cpp side by side: the same decoder shapes, weight types and threads.

llama.cpp runs through llama-cpp-python in its own virtual environment (see
../shared/tools/llamacpp-anchor/README.md for the build); this module finds
that interpreter and runs small scripts in it as subprocesses, so this
process never imports llama.cpp. It makes (once) a llama-architecture GGUF
with random weights and exactly this model's text-decoder shapes (the
anchor's make_gguf.py), quantizes it with llama.cpp's own quantizer to this
project's recipe (every linear in the type, the tied embedding Q8_0), and
times one decoded token at a short and a long context.

Environment: VOXTRAL_LLAMA_PYTHON (default /work/llama-venv/bin/python),
VOXTRAL_ANCHOR_DIR for the GGUFs (default /work/ckpt/anchor),
VOXTRAL_ANCHOR_TOOLS for the anchor scripts (default ../shared/tools/llamacpp-anchor),
VOXTRAL_ANCHOR_LONG for the long context (default 4000 positions; 0 skips it: the
prefill takes minutes on two cores). LLAMA_CPP_LIB_PATH reaches llama-cpp-python
unchanged (a libllama built apart, as the anchor README shows).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = Path(os.environ.get("VOXTRAL_ANCHOR_TOOLS", HERE.parents[1] / "shared" / "tools" / "llamacpp-anchor"))
GGUF_DIR = Path(os.environ.get("VOXTRAL_ANCHOR_DIR", "/work/ckpt/anchor"))
TYPES = ("bf16", "q8_0", "q4_0", "q4_k")
LONG = int(os.environ.get("VOXTRAL_ANCHOR_LONG", "4000"))

# Run inside the llama venv: load a GGUF, fill the context to `ctx` positions
# (prompt batches of 512), time `steps` single-token decodes; prints one JSON line.
_DECODE = r"""
import json, sys, time
import llama_cpp
path, threads, ctx, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=8192, n_threads=threads, n_threads_batch=threads, n_batch=512,
                      use_mmap=True, verbose=False, flash_attn=False)
toks = [1] + [300 + (37 * i) % 130000 for i in range(max(ctx, 2) - 1)]
t0 = time.perf_counter()
for i in range(0, len(toks), 512):
    llm.eval(toks[i:i + 512])
prefill = time.perf_counter() - t0
for i in range(2):  # warm-up: pages of the mapping in
    llm.eval([2000 + 17 * i])
ts = []
for i in range(steps):
    t = time.perf_counter()
    llm.eval([3000 + 17 * i])
    ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"ctx": llm.n_tokens - steps, "ms": ts, "prefill_s": prefill,
                  "version": llama_cpp.__version__, "system": llama_cpp.llama_print_system_info().decode()}))
"""


def llama_python() -> Path | None:
    """The interpreter of the llama-cpp-python venv, or None when llama.cpp is not installed."""
    p = Path(os.environ.get("VOXTRAL_LLAMA_PYTHON", "/work/llama-venv/bin/python"))
    if not p.is_file():
        return None
    ok = subprocess.run([str(p), "-c", "import llama_cpp"], capture_output=True).returncode == 0
    return p if ok else None


def why_missing() -> str:
    return (
        "llama.cpp not installed: no llama-cpp-python at "
        f"{os.environ.get('VOXTRAL_LLAMA_PYTHON', '/work/llama-venv/bin/python')} "
        "(see ../shared/tools/llamacpp-anchor/README.md; VOXTRAL_LLAMA_PYTHON points at another venv)"
    )


def gguf_path(qtype: str) -> Path:
    return GGUF_DIR / f"dec-{qtype}.gguf"


def ensure_source(py: Path) -> Path:
    """The BF16 anchor GGUF (random weights, the decoder's shapes), made once (6.9 GB)."""
    GGUF_DIR.mkdir(parents=True, exist_ok=True)
    src = gguf_path("bf16")
    if not src.is_file():
        subprocess.run([str(py), str(TOOLS / "make_gguf.py"), str(src) + ".part", "bf16"], check=True)
        os.replace(str(src) + ".part", src)
    return src


def ensure_gguf(qtype: str, py: Path) -> tuple[Path, float | None]:
    """The anchor GGUF of ``qtype``, made if missing; returns (path, llama.cpp's
    quantize seconds when it quantized now, else None)."""
    src = ensure_source(py)
    dst = gguf_path(qtype)
    if dst.is_file():
        return dst, None
    return dst, llama_quantize(py, src, dst, qtype)


def llama_quantize(py: Path, src: Path, dst: Path, qtype: str, threads: int = 2) -> float:
    """llama.cpp's quantizer (llama_model_quantize) with this project's recipe: wall seconds."""
    script = (
        "import ctypes, sys, llama_cpp as L\n"
        "ft = {'q8_0': L.LLAMA_FTYPE_MOSTLY_Q8_0, 'q4_0': L.LLAMA_FTYPE_MOSTLY_Q4_0,\n"
        "      'q4_k': L.LLAMA_FTYPE_MOSTLY_Q4_K_S}\n"
        "p = L.llama_model_quantize_default_params()\n"
        "p.ftype = ft[sys.argv[3]]; p.nthread = int(sys.argv[4]); p.pure = True\n"
        "p.token_embedding_type = L.GGML_TYPE_Q8_0; p.output_tensor_type = L.GGML_TYPE_Q8_0\n"
        "sys.exit(L.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    part = Path(str(dst) + ".part")
    t = time.perf_counter()
    subprocess.run([str(py), "-c", script, str(src), str(part), qtype, str(threads)], check=True, capture_output=True)
    took = time.perf_counter() - t
    os.replace(part, dst)
    return took


def llama_decode_ms(py: Path, path: Path, threads: int, ctx: int, steps: int = 8) -> dict:
    """llama.cpp's ms per decoded token at about ``ctx`` cached positions: {"ms": [...], "ctx": n, ...}."""
    r = subprocess.run(
        [str(py), "-c", _DECODE, str(path), str(threads), str(ctx), str(steps)],
        check=True,
        capture_output=True,
        text=True,
    )
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def cpu_flags_line(system_info: str) -> str:
    """The ISA features llama.cpp says it was built with ('AVX2 = 1' ...)."""
    return " ".join(m.group(1) for m in re.finditer(r"(\w+) = 1", system_info))
