#!/usr/bin/env bash
# Prove that a built wheel installs and runs on its own:
#   [REFERENCE_PYTHON=python] .github/wheel-check.sh WHEEL [MODEL_DIR]
#
# - a fresh virtual environment WITHOUT system site packages;
# - dependencies from the index as wheels only (PIP_ONLY_BINARY), and every
#   compiler and build tool on PATH replaced by a stub that fails: no build
#   step can run unnoticed;
# - checks: LICENSE inside the wheel, `python -m voxtral --help`, the kernel
#   tests (tests/test_kernels.py) against the installed package, `inspect`
#   and a transcription of a small random-weight checkpoint.
#
# MODEL_DIR: a checkpoint from `python -m voxtral.testing.checkpoint DIR
# --preset tiny --layout native` (generated here into the check venv, with
# the `testing` extra, when not given). REFERENCE_PYTHON: another
# installation (e.g. the development one) that transcribes the same WAV: the
# token events must be identical.
set -euo pipefail

wheel=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
repo=$(cd "$(dirname "$0")/.." && pwd)
model=${2:-}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf 'wheel-check: %s\n' "$*"; }

# No compiler: stubs that fail loudly shadow every build tool.
mkdir "$work/no-build"
for tool in cc gcc g++ c++ clang clang++ cl cmake ninja make ld; do
    printf '#!/bin/sh\necho "wheel-check: build tool %s was called" >&2\nexit 99\n' "$tool" > "$work/no-build/$tool"
    chmod +x "$work/no-build/$tool"
done
export PATH="$work/no-build:$PATH" PIP_ONLY_BINARY=":all:" PIP_DISABLE_PIP_VERSION_CHECK=1

"$python" -m venv "$work/venv"   # no --system-site-packages
py="$work/venv/bin/python"
[ -x "$py" ] || py="$work/venv/Scripts/python.exe"   # Windows
"$py" -c 'import sys; assert sys.prefix != sys.base_prefix'
if "$py" -c 'import numpy' 2>/dev/null; then echo "wheel-check: numpy visible before install: not a clean venv" >&2; exit 1; fi

say "installing $(basename "$wheel")"
"$py" -m pip install --only-binary=:all: "$wheel" pytest hypothesis scipy > "$work/pip.log" 2>&1 \
    || { cat "$work/pip.log" >&2; exit 1; }
if grep -Eq "Building wheel|Running setup.py|Preparing metadata \(pyproject" "$work/pip.log"; then
    cat "$work/pip.log" >&2; echo "wheel-check: a build step ran during install" >&2; exit 1
fi

cd "$work"   # never import the source tree
"$py" - "$wheel" <<'PY'
import sys, zipfile, voxtral, pathlib
names = zipfile.ZipFile(sys.argv[1]).namelist()
lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")]
assert lic, "LICENSE missing from the wheel"
meta = zipfile.ZipFile(sys.argv[1]).read([n for n in names if n.endswith(".dist-info/METADATA")][0]).decode()
assert "License-Expression: Apache-2.0" in meta, "no License-Expression in METADATA"
assert pathlib.Path(voxtral.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve()), voxtral.__file__
from voxtral import _kernels
print("wheel-check: installed", voxtral.__version__, "from", pathlib.Path(voxtral.__file__).parent,
      "ISA", _kernels.active_isa(), "of", _kernels.available_isas())
PY

say "python -m voxtral --help"
"$py" -m voxtral --help > /dev/null
"$py" -m voxtral --version

say "kernel tests"
"$py" -m pytest -q -p no:cacheprovider "$repo/tests/test_kernels.py"

if [ -z "$model" ]; then
    say "generating a tiny checkpoint (testing extra)"
    "$py" -m pip install --only-binary=:all: "mistral-common>=1.4" > "$work/pip2.log" 2>&1 || { cat "$work/pip2.log" >&2; exit 1; }
    "$py" -m voxtral.testing.checkpoint "$work/model" --preset tiny --layout native --quiet > /dev/null
    model="$work/model"
fi
"$py" -m voxtral inspect "$model" > /dev/null

say "transcribing a generated WAV with $model"
"$py" - "$work/chirp.wav" <<'PY'
import math, struct, sys, wave
rate = 16000
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * (200 + 300 * i / rate) * i / rate)))
                           for i in range(3 * rate)))
PY
"$py" -m voxtral "$work/chirp.wav" --model "$model" --format jsonl --threads 2 > "$work/out.jsonl"
tokens=$(grep -c '"token"' "$work/out.jsonl" || true)
[ "$tokens" -gt 0 ] || { echo "wheel-check: no tokens decoded" >&2; exit 1; }
if [ -n "${REFERENCE_PYTHON:-}" ]; then
    env -u PIP_ONLY_BINARY PATH="${PATH#"$work/no-build:"}" \
        "$REFERENCE_PYTHON" -m voxtral "$work/chirp.wav" --model "$model" --format jsonl --threads 2 > "$work/ref.jsonl"
    cmp "$work/out.jsonl" "$work/ref.jsonl" || { echo "wheel-check: tokens differ from $REFERENCE_PYTHON's" >&2; exit 1; }
    say "token events identical to $REFERENCE_PYTHON's"
fi
say "OK ($tokens token events)"
