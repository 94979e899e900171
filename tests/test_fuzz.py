"""The fuzz harness (fuzz/, atheris) in the default run: a short coverage-
guided run of every target, and the reproducers of what the long runs found.

Every reproducer is kept as a test once its fix is in. A new finding in
another module can be added as ``xfail(strict=True)`` with a matching
``fuzz.targets.KNOWN`` entry; both go when the fix lands."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voxtral.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("atheris")

# executions per target in the default run: a few seconds each
SHORT_RUNS = {"wav": 3000, "stdin": 3000, "safetensors": 3000, "config": 3000, "tekken": 1000, "stream": 40}


@pytest.mark.parametrize("target", sorted(SHORT_RUNS))
def test_short_fuzz_run(target, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            target,
            "--runs",
            str(SHORT_RUNS[target]),
            "--seed",
            "1",
            "--work",
            str(tmp_path / "work"),
            "--artifacts",
            str(tmp_path / "crashes"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Done {SHORT_RUNS[target]} runs" in r.stderr
    assert re.search(r"cov: \d+", r.stderr), "no coverage feedback: voxtral is not instrumented"
    assert not list((tmp_path / "crashes").iterdir())


def test_every_known_issue_has_its_xfail_reproducer():
    sys.path.insert(0, str(REPO))
    try:
        from fuzz.targets import KNOWN
    finally:
        sys.path.remove(str(REPO))
    here = sys.modules[__name__]
    for k in KNOWN:
        file, name = k.test.split("::")
        assert file == "test_fuzz.py", k
        test = getattr(here, name)
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "xfail"]
        assert marks and marks[0].kwargs.get("strict") is True, name


def test_json_mutation_keeps_the_seed_intact():
    sys.path.insert(0, str(REPO))
    try:
        import atheris

        from fuzz.targets import mutate_json
    finally:
        sys.path.remove(str(REPO))
    seed = {"a": {"b": [1, 2, {"c": "d"}]}, "e": 1.5}
    before = json.dumps(seed)
    changed = 0
    for i in range(200):
        out = mutate_json(seed, atheris.FuzzedDataProvider(bytes([i, 255 - i, i * 7 % 256]) * 8))
        changed += out != seed
    assert json.dumps(seed) == before and changed > 100


# ---- reproducers: config.py ---------------------------------------------------


def _params(tmp_path, edit) -> Path:
    from voxtral.testing.checkpoint import params_json, resolve_dims

    p = params_json(resolve_dims("tiny"))
    edit(p)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(p, allow_nan=True))
    return path


def test_config_nan_integer_is_config_error(tmp_path):
    from voxtral.config import from_params_json

    with pytest.raises(ConfigError):
        from_params_json(_params(tmp_path, lambda p: p.update(dim=math.nan)))


def test_config_inf_integer_is_config_error(tmp_path):
    from voxtral.config import from_params_json

    with pytest.raises(ConfigError):
        from_params_json(_params(tmp_path, lambda p: p.update(n_layers=math.inf)))


@pytest.mark.parametrize("value", [math.nan, 1e-320])
def test_config_nan_frame_rate_is_config_error(tmp_path, value):
    from voxtral.config import from_params_json

    def edit(p):
        p["multimodal"]["whisper_model_args"]["encoder_args"]["audio_encoding_args"]["frame_rate"] = value

    with pytest.raises(ConfigError):
        from_params_json(_params(tmp_path, edit))


def _hf_config(tmp_path, edit) -> Path:
    from voxtral.testing.checkpoint import hf_config_json, resolve_dims

    c = hf_config_json(resolve_dims("tiny"))
    edit(c)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(c))
    return path


def test_config_rope_parameters_not_object(tmp_path):
    from voxtral.config import from_hf_config

    with pytest.raises(ConfigError):
        from_hf_config(_hf_config(tmp_path, lambda c: c["text_config"].update(rope_parameters=7)))


def test_config_zero_audio_length_is_config_error(tmp_path):
    from voxtral.config import from_hf_config

    with pytest.raises(ConfigError):
        from_hf_config(_hf_config(tmp_path, lambda c: c.update(audio_length_per_tok=0)))


# ---- reproducers: safetensors_io.py ------------------------------------------


def _safetensors(tmp_path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize("dtype", [["BF16"], {"a": 1}])
def test_safetensors_dtype_list_is_checkpoint_error(tmp_path, dtype):
    from voxtral.safetensors_io import SafetensorsFile

    with pytest.raises(CheckpointError):
        SafetensorsFile(_safetensors(tmp_path, {"t": {"dtype": dtype, "shape": [1], "data_offsets": [0, 2]}}, b"\0\0"))


def test_safetensors_huge_shape_is_checkpoint_error(tmp_path):
    from voxtral.safetensors_io import SafetensorsFile

    with pytest.raises(CheckpointError):
        SafetensorsFile(
            _safetensors(tmp_path, {"t": {"dtype": "BF16", "shape": [2**70], "data_offsets": [0, 2]}}, b"\0\0")
        )


# ---- reproducers: the stream feeder (audio/live resampling) --------------------


def test_stream_absurd_rate_is_refused(tiny_ckpt):
    # In a child with 3 GB of address space and a time limit (it once reached 11 GB, then crashed).
    code = textwrap.dedent(f"""
        import resource, numpy as np, voxtral
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        model = voxtral.load({str(tiny_ckpt["native"])!r}, num_threads=1)
        for rate in (1, 100):
            try:
                model.stream(480, sample_rate=rate).feed(np.zeros(16000, dtype=np.float32))
            except voxtral.VoxtralError as e:
                print("typed", rate, type(e).__name__)
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("hangs")
    assert r.returncode == 0 and r.stdout.count("typed") == 2, r.stderr[-500:]
