"""Model files: zero-copy loading, and a clear typed error for every kind of
broken or mismatched checkpoint (never a crash or a read past the end)."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

import voxtral
from voxtral.errors import CheckpointError, ConfigError, ModelFileError, VoxtralError
from voxtral.safetensors_io import SafetensorsFile
from voxtral.weights import load_weights

ST = "consolidated.safetensors"


@pytest.fixture
def native_copy(tiny_ckpt, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_ckpt["native"], dst)
    return dst


def _read_header(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_header(path, header, data):
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


def _edit_header(path, fn):
    header, data = _read_header(path)
    fn(header)
    _write_header(path, header, data)


def _a_matrix(header):
    return next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2)


def test_weights_are_zero_copy_views(tiny_ckpt):
    t0 = time.perf_counter()
    _, w, layout = load_weights(tiny_ckpt["native"])
    assert layout == "native"
    for mat in (w.tok_embeddings, w.decoder_layers[0].wq, w.encoder_layers[0].w1, w.conv1_w):
        assert mat.dtype == np.uint16
        assert not mat.flags.owndata and not mat.flags.writeable  # a view of the read-only mmap
    assert time.perf_counter() - t0 < 5.0


def test_hf_and_native_weights_agree(tiny_ckpt):
    _, wn, _ = load_weights(tiny_ckpt["native"])
    cfg, wh, layout = load_weights(tiny_ckpt["hf"])
    assert layout == "hf" and cfg.rope_style == "half"
    np.testing.assert_array_equal(wn.tok_embeddings, wh.tok_embeddings)
    np.testing.assert_array_equal(wn.decoder_layers[1].w2, wh.decoder_layers[1].w2)
    # q rows are permuted within each head, so the same multiset of rows per head
    h, hd = cfg.decoder.n_heads, cfg.decoder.head_dim
    a = np.sort(wn.decoder_layers[0].wq.reshape(h, hd, -1), axis=1)
    b = np.sort(wh.decoder_layers[0].wq.reshape(h, hd, -1), axis=1)
    np.testing.assert_array_equal(a, b)


def test_truncated_file(native_copy):
    path = native_copy / ST
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(CheckpointError, match=r"consolidated\.safetensors: tensor .*truncated"):
        load_weights(native_copy)


def test_truncated_header(native_copy):
    path = native_copy / ST
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="header length"):
        load_weights(native_copy)


def test_tiny_file(native_copy):
    (native_copy / ST).write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated"):
        load_weights(native_copy)


def test_header_not_json(native_copy):
    path = native_copy / ST
    raw = bytearray(path.read_bytes())
    raw[8:12] = b"\xff\xfe{{"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_weights(native_copy)


def test_header_offsets_past_end(native_copy):
    path = native_copy / ST

    def lie(h):
        name = _a_matrix(h)
        b, e = h[name]["data_offsets"]
        h[name]["data_offsets"] = [b + 10**9, e + 10**9]

    _edit_header(path, lie)
    with pytest.raises(CheckpointError, match="truncated file"):
        load_weights(native_copy)


def test_header_size_disagrees_with_shape(native_copy):
    def lie(h):
        name = _a_matrix(h)
        h[name]["shape"][0] += 1

    _edit_header(native_copy / ST, lie)
    with pytest.raises(CheckpointError, match="bytes for shape"):
        load_weights(native_copy)


def test_overlapping_tensors(native_copy):
    def lie(h):
        names = [k for k in h if k != "__metadata__" and h[k]["shape"] == [h[k]["shape"][0]]]
        a, b = names[0], names[1]
        if h[a]["shape"] == h[b]["shape"]:
            h[b]["data_offsets"] = list(h[a]["data_offsets"])
        else:
            pytest.skip("no two same-shape vectors")

    _edit_header(native_copy / ST, lie)
    with pytest.raises(CheckpointError, match="overlap"):
        load_weights(native_copy)


def test_missing_tensor(native_copy):
    victim = "layers.1.feed_forward.w3.weight"
    _edit_header(native_copy / ST, lambda h: h.pop(victim))
    with pytest.raises(CheckpointError, match=r"layers\.1\.feed_forward\.w3\.weight is missing"):
        load_weights(native_copy)


def test_wrong_shape(native_copy):
    def swap(h):
        name = "layers.0.attention.wq.weight"
        h[name]["shape"] = list(reversed(h[name]["shape"]))

    _edit_header(native_copy / ST, swap)
    with pytest.raises(CheckpointError, match=r"layers\.0\.attention\.wq\.weight has shape"):
        load_weights(native_copy)


def test_wrong_dtype(native_copy):
    def i16(h):  # same size as BF16, not a float type (F16 and F32 matrices load: tests/test_saved_dtypes.py)
        h["layers.0.attention.wk.weight"]["dtype"] = "I16"

    _edit_header(native_copy / ST, i16)
    with pytest.raises(CheckpointError, match="must be BF16, F16 or F32"):
        load_weights(native_copy)


def test_unknown_dtype(native_copy):
    def weird(h):
        h["layers.0.attention.wk.weight"]["dtype"] = "F8_E4M3"

    _edit_header(native_copy / ST, weird)
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        load_weights(native_copy)


def test_config_says_more_layers_than_checkpoint(native_copy):
    p = json.loads((native_copy / "params.json").read_text())
    p["n_layers"] += 1
    (native_copy / "params.json").write_text(json.dumps(p))
    with pytest.raises(CheckpointError, match="is missing"):
        load_weights(native_copy)


def test_config_says_fewer_layers_than_checkpoint(native_copy):
    p = json.loads((native_copy / "params.json").read_text())
    p["n_layers"] -= 1
    (native_copy / "params.json").write_text(json.dumps(p))
    with pytest.raises(CheckpointError, match="not part of the configured model"):
        load_weights(native_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.pop("dim"), "missing key dim"),
        (lambda p: p.update(n_kv_heads=3), "not a multiple of n_kv_heads"),
        (lambda p: p.update(head_dim="big"), "must be an integer"),
        (lambda p: p.update(n_layers=0), "positive integer"),
        (
            lambda p: p["multimodal"]["whisper_model_args"]["encoder_args"]["audio_encoding_args"].update(
                hop_length=150
            ),
            "multiple of hop_length",
        ),
        (lambda p: p["multimodal"]["whisper_model_args"].pop("downsample_args"), "downsample_args"),
    ],
)
def test_inconsistent_params(native_copy, edit, message):
    p = json.loads((native_copy / "params.json").read_text())
    edit(p)
    (native_copy / "params.json").write_text(json.dumps(p))
    with pytest.raises(ConfigError, match=message):
        load_weights(native_copy)


def test_params_not_json(native_copy):
    (native_copy / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match="params.json"):
        load_weights(native_copy)


def test_hf_index_points_to_missing_shard(tiny_ckpt, tmp_path):
    dst = tmp_path / "hf"
    shutil.copytree(tiny_ckpt["hf"], dst)
    shards = sorted(dst.glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(dst)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ModelFileError):
        load_weights(tmp_path)


def test_errors_share_one_hierarchy():
    for cls in (CheckpointError, ConfigError, ModelFileError, voxtral.AudioError, voxtral.TokenizerError):
        assert issubclass(cls, VoxtralError)


def test_safetensors_reader_matches_reference_library(tiny_ckpt):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    ours = SafetensorsFile(tiny_ckpt["native"] / ST)
    with safe_open(str(tiny_ckpt["native"] / ST), framework="pt") as f:
        names = sorted(f.keys())
        assert names == sorted(ours.keys())
        for name in names[:20]:
            t = f.get_tensor(name)
            ref = t.view(dtype=__import__("torch").int16).numpy().view(np.uint16)
            np.testing.assert_array_equal(ours.tensor(name), ref)


def _small_st(path, header_obj):
    """A safetensors file with the given (possibly malformed) header JSON text or object."""
    blob = (header_obj if isinstance(header_obj, str) else json.dumps(header_obj)).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "header",
    [
        {"t": {"dtype": ["BF16"], "shape": [2], "data_offsets": [0, 4]}},  # list dtype: was TypeError
        {"t": {"dtype": {"a": 1}, "shape": [2], "data_offsets": [0, 4]}},  # dict dtype: was TypeError
        {"t": {"dtype": "BF16", "shape": [2**70], "data_offsets": [0, 4]}},  # was OverflowError
        {"t": {"dtype": "BF16", "shape": [2**40, 2**40], "data_offsets": [0, 4]}},
        {"t": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 2**80]}},
        {"t": {"dtype": "BF16", "shape": "2", "data_offsets": [0, 4]}},
        {"t": {"dtype": "BF16", "shape": [2], "data_offsets": None}},
        {"__metadata__": [1, 2], "t": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
        [1, 2, 3],
        "[" * 100000 + "]" * 100000,  # nesting deeper than the JSON parser's recursion: was RecursionError
        '{"t": {"dtype": "BF16", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 4]}}',  # int too long: ValueError
    ],
)
def test_malformed_safetensors_header_is_checkpoint_error(tmp_path, header):
    with pytest.raises(CheckpointError):
        SafetensorsFile(_small_st(tmp_path / "x.safetensors", header))


def test_random_header_mutations_raise_only_checkpoint_error(tmp_path, tiny_ckpt):
    """Byte-level mutations of a real header: the reader opens it or raises
    CheckpointError, nothing else."""
    raw = (tiny_ckpt["native"] / ST).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    rng = np.random.default_rng(8)
    path = tmp_path / "m.safetensors"
    for _ in range(300):
        head = bytearray(raw[8 : 8 + n])
        for _ in range(int(rng.integers(1, 4))):
            head[int(rng.integers(0, len(head)))] = int(rng.choice(list(b'[]{}",:0123456789-eE.BF16x ')))
        path.write_bytes(raw[:8] + bytes(head) + raw[8 + n : 8 + n + 4096])
        try:
            SafetensorsFile(path)
        except CheckpointError:
            pass
