"""Build hygiene: every C file compiles for every target we ship (the NEON
path with an aarch64 cross compiler when one is installed; .ci/run installs
it), the generic files need no ISA flags, and no build file asks for
-march=native (a wheel must run on any CPU of its platform)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
GENERIC = [
    "vx_cpu.c",
    "vx_tasks.c",
    "vx_core.c",
    "vx_attn.c",
    "vx_fft.c",
    "isa_scalar.c",
    "vx_quant.c",
    "quant_scalar.c",
    "qpack.c",
    "vx_kv.c",
    "vx_quantize.c",
]
X86_ONLY = [
    "isa_avx2.c",
    "quant_avx2.c",
    "quant_avxvnni.c",
    "quant_avx512.c",
    "qpack_avx2.c",
    "qpack_avxvnni.c",
    "qpack_avx512vnni.c",
    "qpack_amx.c",
    "kv_avx2.c",
    "kv_avx512.c",
    "vx_quantize_avx2.c",
]


# what CMakeLists.txt gives the AVX-512 VNNI files
AVX512_VNNI_FLAGS = [
    "-march=x86-64",
    "-DVX_HAVE_AVX512VNNI",
    "-mavx512f",
    "-mavx512bw",
    "-mavx512dq",
    "-mavx512vl",
    "-mavx512vnni",
    "-mavx2",
    "-mfma",
    "-mf16c",
]


def _compile(cc, src, flags, tmp_path):
    r = subprocess.run(
        [
            cc,
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fopenmp",
            *flags,
            "-c",
            str(CSRC / src),
            "-o",
            str(tmp_path / (src + ".o")),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"{cc} {src}: {r.stderr}"


def test_no_native_arch_flags():
    for name in ("CMakeLists.txt", "pyproject.toml", ".github/workflows/wheels.yml"):
        text = (ROOT / name).read_text()
        assert "march=native" not in text and "mtune=native" not in text, name


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_generic_files_compile_for_baseline_x86_64(tmp_path):
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 host only")
    for src in GENERIC:
        _compile("gcc", src, ["-march=x86-64"], tmp_path)
    _compile("gcc", "isa_avx2.c", ["-march=x86-64", "-mavx2", "-mfma", "-mf16c"], tmp_path)
    _compile("gcc", "isa_avx512.c", ["-march=x86-64", "-DVX_HAVE_AVX512", "-mavx512f", "-mavx2", "-mfma"], tmp_path)
    _compile("gcc", "quant_avx2.c", ["-march=x86-64", "-mavx2", "-mfma", "-mf16c"], tmp_path)
    _compile("gcc", "qpack_avx2.c", ["-march=x86-64", "-mavx2", "-mfma", "-mf16c"], tmp_path)
    _compile(
        "gcc",
        "quant_avxvnni.c",
        ["-march=x86-64", "-DVX_HAVE_AVXVNNI", "-mavxvnni", "-mavx2", "-mfma", "-mf16c"],
        tmp_path,
    )
    _compile("gcc", "quant_avx512.c", AVX512_VNNI_FLAGS, tmp_path)
    # the generic files with every optional kernel table declared
    _compile(
        "gcc",
        "vx_quant.c",
        ["-march=x86-64", "-DVX_HAVE_AVX512", "-DVX_HAVE_AVXVNNI", "-DVX_HAVE_AVX512VNNI"],
        tmp_path,
    )
    every_level = ["-march=x86-64", "-DVX_HAVE_AVX512", "-DVX_HAVE_AVXVNNI", "-DVX_HAVE_AVX512VNNI", "-DVX_HAVE_AMX"]
    _compile("gcc", "vx_cpu.c", every_level, tmp_path)
    _compile("gcc", "vx_quant.c", every_level, tmp_path)
    _compile(
        "gcc",
        "qpack_avxvnni.c",
        ["-march=x86-64", "-DVX_HAVE_AVXVNNI", "-mavxvnni", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off"],
        tmp_path,
    )
    _compile("gcc", "qpack_avx512vnni.c", [*AVX512_VNNI_FLAGS, "-ffp-contract=off"], tmp_path)
    # AMX: the VNNI flags plus the tiles'; its copy of the VNNI kernels must not define their table again
    amx = [*AVX512_VNNI_FLAGS, "-DVX_HAVE_AMX", "-mamx-tile", "-mamx-int8", "-ffp-contract=off"]
    _compile("gcc", "qpack_amx.c", amx, tmp_path)
    for obj, table in [
        ("quant_avx512.c.o", "vx_qops_avx512vnni"),
        ("qpack_avxvnni.c.o", "vx_qpops_avxvnni"),
        ("qpack_avx512vnni.c.o", "vx_qpops_avx512vnni"),
        ("qpack_amx.c.o", "vx_qpops_amx"),
    ]:
        nm = subprocess.run(["nm", str(tmp_path / obj)], capture_output=True, text=True)
        assert table in nm.stdout, obj
    nm = subprocess.run(["nm", str(tmp_path / "qpack_amx.c.o")], capture_output=True, text=True)
    assert "vx_qpops_avx512vnni" not in nm.stdout
    _compile("gcc", "kv_avx2.c", ["-march=x86-64", "-mavx2", "-mfma", "-mf16c"], tmp_path)
    _compile("gcc", "vx_quantize_avx2.c", ["-march=x86-64", "-mavx2", "-ffp-contract=off"], tmp_path)
    _compile("gcc", "vx_quantize.c", ["-march=x86-64", "-DVX_HAVE_QUANTIZE_AVX2", "-ffp-contract=off"], tmp_path)
    _compile("gcc", "kv_avx512.c", ["-march=x86-64", "-DVX_HAVE_AVX512", "-mavx512f", "-mavx2", "-mfma"], tmp_path)


# An aarch64 program's C files: vx_cpu.c's levels table names every kernel
# table, so a check program links them all, as the extension does.
NEON_BUILD = (*GENERIC, "isa_neon.c", "quant_neon.c", "kv_neon.c")


def test_neon_path_compiles_for_aarch64(tmp_path):
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler (apt install gcc-aarch64-linux-gnu; .ci/run does)")
    for src in [
        *GENERIC,
        "isa_neon.c",
        "quant_neon.c",
        "kv_neon.c",
        *X86_ONLY,
    ]:  # the x86 files must compile to nothing there
        _compile(cc, src, [], tmp_path)
    _compile(cc, "quant_neon_dotprod.c", ["-DVX_HAVE_NEON_DOTPROD", "-march=armv8.2-a+dotprod"], tmp_path)
    _compile(cc, "vx_quant.c", ["-DVX_HAVE_NEON_DOTPROD"], tmp_path)
    for obj, sym in [
        ("isa_neon.c.o", "vx_ops_neon"),
        ("quant_neon.c.o", "vx_qops_neon"),
        ("quant_neon_dotprod.c.o", "vx_qops_neon_dotprod"),
        ("kv_neon.c.o", "vx_attn_kv_neon"),
    ]:
        syms = subprocess.run(["aarch64-linux-gnu-nm", str(tmp_path / obj)], capture_output=True, text=True)
        assert sym in syms.stdout, obj


def test_neon_quant_kernels_run_under_qemu(tmp_path):
    """Where qemu-aarch64 is installed, the NEON quantized kernels (plain and
    +dotprod) are not only compiled but run: tests/neon_quant_check.c compares
    them with the scalar reference (checked against gguf in test_qkernels)."""
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cc is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
    objs = []
    for src, flags in [("quant_neon_dotprod.c", ["-march=armv8.2-a+dotprod"])] + [(s, []) for s in NEON_BUILD]:
        obj = tmp_path / (src + ".o")
        r = subprocess.run(
            [cc, "-O2", "-DVX_HAVE_NEON_DOTPROD", *flags, "-c", str(CSRC / src), "-o", str(obj)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        objs.append(str(obj))
    exe = tmp_path / "neon_quant_check"
    r = subprocess.run(
        [
            cc,
            "-O2",
            "-static",
            "-DVX_HAVE_NEON_DOTPROD",
            f"-I{CSRC}",
            str(ROOT / "tests" / "neon_quant_check.c"),
            *objs,
            "-lm",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    run = subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok: levels neon neon_dotprod, 0 failures" in run.stdout  # qemu emulates dotprod


def test_neon_kv_attention_runs_under_qemu(tmp_path):
    """The NEON compact-KV attention kernel agrees with the scalar reference
    (tests/c/kv_check.c), run under qemu-user (apt install qemu-user)."""
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cc is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
    exe = tmp_path / "kv_check"
    srcs = [
        ROOT / "tests" / "c" / "kv_check.c",
        *(CSRC / f for f in NEON_BUILD),
    ]
    r = subprocess.run(
        [
            cc,
            "-O2",
            "-static",
            "-fopenmp",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{CSRC}",
            *map(str, srcs),
            "-lm",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run([qemu, str(exe), "1"], capture_output=True, text=True, timeout=300)  # 1 = VX_ISA_NEON
    assert r.returncode == 0 and r.stdout.strip() == "ok neon", r.stdout + r.stderr


def test_sdist_carries_the_license(tmp_path):
    """The sdist (built by the project's backend, no compiler involved) holds
    LICENSE, and its metadata says Apache-2.0 and points at it."""
    import tarfile

    pytest.importorskip("scikit_build_core")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    sdist = tmp_path / r.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        assert f"{top}/LICENSE" in names
        assert "Apache License" in tar.extractfile(f"{top}/LICENSE").read().decode()
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    assert "License-Expression: Apache-2.0" in pkg_info and "License-File: LICENSE" in pkg_info


def test_quantizer_writes_the_same_bytes_on_aarch64(tmp_path):
    """The weight quantizer (csrc/vx_quantize.c, contraction off) built for
    aarch64 and run under qemu writes the bytes the x86-64 build writes, for
    every type: a quantized model does not depend on the machine that made it."""
    import numpy as np

    from voxtral import _kernels

    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cc is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
    exe = tmp_path / "quantize_check"
    srcs = [
        ROOT / "tests" / "c" / "quantize_check.c",
        *(CSRC / f for f in NEON_BUILD),
    ]
    r = subprocess.run(
        [
            cc,
            "-O2",
            "-static",
            "-fopenmp",
            "-ffp-contract=off",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{CSRC}",
            *map(str, srcs),
            "-lm",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(17)
    x = (rng.standard_t(3, (24, 512)) * rng.uniform(1e-3, 10, (24, 1))).astype(np.float32)
    x[3, :256] = 0
    x[5, 7] = -x[5].__abs__().max() * 1.5
    (tmp_path / "in.f32").write_bytes(x.tobytes())
    for qid, qtype in enumerate(("q8_0", "q4_0", "q4_k")):
        out = tmp_path / f"{qtype}.bin"
        run = subprocess.run(
            [qemu, str(exe), str(tmp_path / "in.f32"), str(out), str(qid), "24", "512"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        ours = _kernels.quantize_rows(x, qtype)
        assert np.frombuffer(out.read_bytes(), np.uint8).tobytes() == ours.tobytes(), qtype
