"""``python -m voxtral inspect DIR``: the loaders' checks, without loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import voxtral
from voxtral.inspect import inspect_dir


def run_inspect(*args):
    return subprocess.run(
        [sys.executable, "-m", "voxtral", "inspect", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("VOXTRAL_")},
    )


@pytest.mark.parametrize("layout", ["native", "hf"])
def test_good_directory_summary(tiny_ckpt, layout):
    from voxtral.testing.checkpoint import resolve_dims

    d = resolve_dims("tiny")
    r = run_inspect(tiny_ckpt[layout])
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"layout: {layout}" in out and out.rstrip().endswith("loadable: yes")
    assert f"encoder: {d['enc_n_layers']} layers, dim {d['enc_dim']}" in out
    assert f"decoder: {d['n_layers']} layers, dim {d['dim']}" in out and f"vocab {d['vocab_size']}" in out
    assert f"tekken.json: vocab {d['vocab_size']} (1000 special)" in out
    assert "BF16 x 57" in out  # every tensor of the tiny model (2+2 layers), from the headers
    n_files = 1 if layout == "native" else len(list(tiny_ckpt[layout].glob("model-*.safetensors")))
    assert f"total: {n_files} file(s), 57 tensors" in out
    rep = json.loads(run_inspect(tiny_ckpt[layout], "--json").stdout)
    assert rep["loadable"] is True and rep["layout"] == layout and rep["problems"] == []


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_every_problem_is_listed(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt["native"], tmp_path / "m")
    (d / "tekken.json").write_text("{ not json")
    st = d / "consolidated.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    r = run_inspect(d)
    assert r.returncode == voxtral.ModelFileError.exit_code
    assert "NOT loadable: 2 problem(s)" in r.stdout
    assert "tekken.json" in r.stdout and "truncated" in r.stdout
    assert "Traceback" not in r.stderr


def test_wrong_shape_and_bad_config(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt["native"], tmp_path / "m")
    params = json.loads((d / "params.json").read_text())
    params["hidden_dim"] += 1  # the tensors no longer match the config
    (d / "params.json").write_text(json.dumps(params))
    rep = inspect_dir(d)
    assert not rep.loadable and len(rep.problems) == 1
    assert "shape" in rep.problems[0] and "feed_forward" in rep.problems[0]
    params["n_heads"] = 3  # not a multiple of n_kv_heads
    (d / "params.json").write_text(json.dumps(params))
    rep = inspect_dir(d)
    assert not rep.loadable and "n_kv_heads" in rep.problems[0]
    # loading says the same
    with pytest.raises(voxtral.ConfigError):
        voxtral.load(d)


def test_index_naming_a_missing_shard(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt["hf"], tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    rep = inspect_dir(d)
    assert not rep.loadable
    assert any(shard.name in p and "not found" in p for p in rep.problems), rep.problems
    assert len(rep.problems) == 1  # the loader's own message, not twice


def test_not_a_model_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    r = run_inspect(tmp_path)
    assert r.returncode == voxtral.ModelFileError.exit_code
    assert "layout: unknown" in r.stdout and "consolidated.safetensors" in r.stdout
    r = run_inspect(tmp_path / "absent")
    assert r.returncode == voxtral.ModelFileError.exit_code and "does not exist" in r.stdout


def test_quantized_directory(tiny_ckpt, tmp_path):
    """A GGUF directory (as `voxtral quantize` writes it): types from the file
    itself, every tensor checked against the config; a truncated file fails."""
    from voxtral import quantize

    dst = tmp_path / "q8"
    assert quantize.main([str(tiny_ckpt["native"]), str(dst), "--type", "q8_0", "--quiet"]) == 0
    report = inspect_dir(dst)
    assert report.layout == "gguf" and report.loadable, report.text()
    assert "quantized to q8_0" in report.text() and "q8_0 x" in report.text()
    gguf = dst / "model.gguf"
    gguf.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    bad = inspect_dir(dst)
    assert not bad.loadable and bad.problems
