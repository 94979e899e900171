"""Build hygiene: every C file compiles for every target we ship (the NEON
path with an aarch64 cross compiler when one is installed; .ci/run installs
it), the generic files need no ISA flags, and no build file asks for
-march=native (a wheel must run on any CPU of its platform)."""

from __future__ import annotations

import shutil
import sys
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
GENERIC = ["vx_cpu.c", "vx_core.c", "vx_fft.c", "isa_scalar.c"]


def _compile(cc, src, flags, tmp_path):
    r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-fopenmp", *flags, "-c", str(CSRC / src),
                        "-o", str(tmp_path / (src + ".o"))], capture_output=True, text=True)
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


def test_neon_path_compiles_for_aarch64(tmp_path):
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler (apt install gcc-aarch64-linux-gnu; .ci/run does)")
    for src in [*GENERIC, "isa_neon.c", "isa_avx2.c"]:  # the x86 file must compile to nothing there
        _compile(cc, src, [], tmp_path)
    syms = subprocess.run(["aarch64-linux-gnu-nm", str(tmp_path / "isa_neon.c.o")], capture_output=True, text=True)
    assert "vx_ops_neon" in syms.stdout


def test_sdist_carries_the_license(tmp_path):
    """The sdist (built by the project's backend, no compiler involved) holds
    LICENSE, and its metadata says Apache-2.0 and points at it."""
    import tarfile

    pytest.importorskip("scikit_build_core")
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
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
