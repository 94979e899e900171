"""Shared fixtures: the shared test data beside the repo, and random-weight
checkpoints generated once per session (see voxtral.testing.checkpoint).

Options / environment:
- ``--runslow`` (or ``VOXTRAL_RUNSLOW=1``): run tests marked ``slow``.
- ``VOXTRAL_TEST_CACHE=DIR``: keep generated checkpoints in DIR across
  sessions (keyed by preset, seed and generator version) instead of a
  per-session temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

if str(TESTS_DIR) not in sys.path:  # so tests can `import reference`
    sys.path.insert(0, str(TESTS_DIR))

# Bump when the generator's output changes, to invalidate VOXTRAL_TEST_CACHE.
_CKPT_VERSION = 1


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test; skipped unless --runslow or VOXTRAL_RUNSLOW=1")
    config.addinivalue_line("markers", "realweights: needs the real model (VOXTRAL_MODEL_DIR)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("VOXTRAL_RUNSLOW", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="slow: use --runslow or VOXTRAL_RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DIR} (expected ../shared beside the repository)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def audio_dir(shared_dir) -> Path:
    d = shared_dir / "data" / "audio"
    if not d.is_dir() or not any(d.glob("*.wav")):
        pytest.skip(f"shared test recordings not found in {d}")
    return d


def _make(tmp_path_factory, name: str, preset: str, seed: int = 0, **overrides) -> dict[str, Path]:
    from voxtral.testing.checkpoint import make_checkpoint

    cache = os.environ.get("VOXTRAL_TEST_CACHE")
    if cache:
        tag = json.dumps({"v": _CKPT_VERSION, "preset": preset, "seed": seed, **overrides}, sort_keys=True)
        out = Path(cache) / f"{name}-{hashlib.sha256(tag.encode()).hexdigest()[:12]}"
        stamp = out / "COMPLETE"
        if stamp.is_file() and stamp.read_text() == tag:
            return {"native": out / "native", "hf": out / "hf"}
        shutil.rmtree(out, ignore_errors=True)
        dirs = make_checkpoint(out, preset=preset, layout="both", seed=seed, **overrides)
        stamp.write_text(tag)
        return dirs
    out = tmp_path_factory.mktemp(name)
    return make_checkpoint(out, preset=preset, layout="both", seed=seed, **overrides)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> dict[str, Path]:
    """The ``tiny`` preset, both layouts from the same tensors:
    {"native": Path, "hf": Path}. Under a second to generate."""
    return _make(tmp_path_factory, "tiny", "tiny")


@pytest.fixture(scope="session")
def fullwidth_ckpt(tmp_path_factory) -> dict[str, Path]:
    """Real widths and vocabulary with 2 encoder + 2 decoder layers, both
    layouts (~1.45 GB each, ~20 s); generated only when a test asks for it."""
    return _make(tmp_path_factory, "fullwidth", "fullwidth", enc_n_layers=2, n_layers=2)


@pytest.fixture(scope="session")
def small_window_ckpt(tmp_path_factory) -> dict[str, Path]:
    """``tiny`` with attention windows far shorter than the test audio
    (decoder 48 positions, encoder 40 frames), so that a few seconds of speech
    exercise what a real stream does after ~11 minutes: the sliding window and
    the KV-cache compaction."""
    return _make(tmp_path_factory, "small_window", "tiny", sliding_window=48, enc_sliding_window=40)


def _runnable_isas() -> list[str]:
    from voxtral import _kernels

    return _kernels.available_isas()


@pytest.fixture(params=_runnable_isas())
def isa(request):
    """Run the test once per ISA level this machine can run (the others are
    forced off with set_isa, so every fallback is exercised)."""
    from voxtral import _kernels

    before = _kernels.active_isa()
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(before)
