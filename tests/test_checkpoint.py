"""The random-weight checkpoint generator (voxtral.testing.checkpoint): real
tensor names, shapes and dtypes in both layouts, a Hugging Face layout that
transformers loads cleanly and that is the same model as the native one, a
tekken.json that mistral-common loads, and reference output varied enough for
token parity to mean something."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voxtral.testing import checkpoint as ck
from voxtral.testing.safetensors_writer import SafetensorsWriter, TensorSpec, bf16_bits_to_f32, f32_to_bf16_bits

safetensors = pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")
from safetensors import safe_open  # noqa: E402


def _load_bits(path) -> dict[str, np.ndarray]:
    """All tensors of a BF16 safetensors file as uint16 bit patterns."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            assert t.dtype == torch.bfloat16, (k, t.dtype)
            out[k] = t.view(torch.int16).numpy().view(np.uint16).copy()  # not a view of the mmap
    return out


def _hf_bits(hf_dir) -> dict[str, np.ndarray]:
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        part = _load_bits(hf_dir / shard)
        assert {k for k, v in index["weight_map"].items() if v == shard} == set(part)
        out.update(part)
    return out


def _raw_header(path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return n, json.loads(f.read(n))


# --------------------------------------------------------------------------
# (a) names, shapes, dtypes


def test_full_preset_matches_the_real_model_spec():
    """No generation: the full preset's tensor list is the real checkpoint's."""
    d = ck.resolve_dims("full")
    specs = {s.name: s.shape for s in ck.tensor_specs(d)}
    assert len(specs) == 711  # model.md: 711 tensors
    n_params = sum(math.prod(s) for s in specs.values())
    assert 4.3e9 < n_params < 4.5e9 and abs(2 * n_params - 8.86e9) < 0.05e9
    enc = "mm_streams_embeddings.embedding_module.whisper_encoder."
    want = {
        "mm_streams_embeddings.embedding_module.tok_embeddings.weight": (131072, 3072),
        enc + "conv_layers.0.conv.weight": (1280, 128, 3),
        enc + "conv_layers.0.conv.bias": (1280,),
        enc + "conv_layers.1.conv.weight": (1280, 1280, 3),
        enc + "transformer.layers.31.attention.wq.weight": (2048, 1280),
        enc + "transformer.layers.31.attention.wq.bias": (2048,),
        enc + "transformer.layers.0.attention.wk.weight": (2048, 1280),
        enc + "transformer.layers.0.attention.wv.bias": (2048,),
        enc + "transformer.layers.0.attention.wo.weight": (1280, 2048),
        enc + "transformer.layers.0.attention.wo.bias": (1280,),
        enc + "transformer.layers.0.feed_forward.w1.weight": (5120, 1280),
        enc + "transformer.layers.0.feed_forward.w2.weight": (1280, 5120),
        enc + "transformer.layers.0.feed_forward.w2.bias": (1280,),
        enc + "transformer.layers.0.feed_forward.w3.weight": (5120, 1280),
        enc + "transformer.layers.0.attention_norm.weight": (1280,),
        enc + "transformer.layers.0.ffn_norm.weight": (1280,),
        enc + "transformer.norm.weight": (1280,),
        "mm_streams_embeddings.embedding_module.audio_language_projection.0.weight": (3072, 5120),
        "mm_streams_embeddings.embedding_module.audio_language_projection.2.weight": (3072, 3072),
        "layers.25.attention.wq.weight": (4096, 3072),
        "layers.0.attention.wk.weight": (1024, 3072),
        "layers.0.attention.wv.weight": (1024, 3072),
        "layers.0.attention.wo.weight": (3072, 4096),
        "layers.0.feed_forward.w1.weight": (9216, 3072),
        "layers.0.feed_forward.w2.weight": (3072, 9216),
        "layers.0.feed_forward.w3.weight": (9216, 3072),
        "layers.0.ada_rms_norm_t_cond.0.weight": (32, 3072),
        "layers.0.ada_rms_norm_t_cond.2.weight": (3072, 32),
        "layers.0.attention_norm.weight": (3072,),
        "layers.0.ffn_norm.weight": (3072,),
        "norm.weight": (3072,),
    }
    for k, shape in want.items():
        assert specs.get(k) == shape, k
    for absent in ("layers.0.attention.wq.bias", enc + "transformer.layers.0.attention.wk.bias", "output.weight"):
        assert absent not in specs


def test_native_files(tiny_ckpt):
    d = ck.resolve_dims("tiny")
    native = tiny_ckpt["native"]
    assert sorted(p.name for p in native.iterdir()) == ["consolidated.safetensors", "params.json", "tekken.json"]
    n, header = _raw_header(native / "consolidated.safetensors")
    assert n % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    want = {s.name: list(s.shape) for s in ck.tensor_specs(d)}
    assert len(want) == 9 + 13 * 2 + 11 * 2
    got = {k: v for k, v in header.items() if k != "__metadata__"}
    assert {k: v["shape"] for k, v in got.items()} == want
    assert {v["dtype"] for v in got.values()} == {"BF16"}
    # data offsets contiguous and the file exactly that long
    spans = sorted(v["data_offsets"] for v in got.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert (native / "consolidated.safetensors").stat().st_size == 8 + n + spans[-1][1]
    bits = _load_bits(native / "consolidated.safetensors")  # the reference library reads it
    assert set(bits) == set(want)

    p = json.loads((native / "params.json").read_text())
    assert p["dim"] == 96 and p["n_heads"] * p["head_dim"] != p["dim"] and p["n_kv_heads"] == 2
    assert p["vocab_size"] == 8192 and p["tied_embeddings"] is True and p["sliding_window"] == 8192
    assert p["rope_theta"] == 1e6 and p["norm_eps"] == 1e-5 and p["ada_rms_norm_t_cond_dim"] == 32
    w = p["multimodal"]["whisper_model_args"]
    e = w["encoder_args"]
    assert e["n_heads"] * e["head_dim"] != e["dim"] and e["use_biases"] is True and e["sliding_window"] == 750
    assert e["rope_theta"] == 1e6 and e["causal"] is True
    assert e["audio_encoding_args"] == {
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "num_mel_bins": 128,
        "hop_length": 160,
        "window_size": 400,
        "global_log_mel_max": 1.5,
        "transcription_format": "streaming",
    }
    assert w["downsample_args"] == {"downsample_factor": 4}


def test_hf_files(tiny_ckpt):
    hf = tiny_ckpt["hf"]
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    bits = _hf_bits(hf)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in bits.values())
    assert not any(k.startswith("lm_head") for k in bits)
    assert all(
        k.startswith(("model.language_model.", "model.audio_tower.", "model.multi_modal_projector.")) for k in bits
    )
    assert (hf / "tekken.json").read_bytes() == (tiny_ckpt["native"] / "tekken.json").read_bytes()


def test_values_follow_the_stated_distribution():
    d = ck.resolve_dims("tiny", vocab_size=20000)
    specs = {s.name: s for s in ck.tensor_specs(d)}
    f = lambda name: bf16_bits_to_f32(ck.generate_tensor(specs[name], 0))  # noqa: E731
    emb = f("mm_streams_embeddings.embedding_module.tok_embeddings.weight")
    assert abs(emb.std() - 1) < 0.01 and abs(emb.mean()) < 0.01
    w1 = f("layers.0.feed_forward.w1.weight")  # fan_in = 96
    assert abs(w1.std() / (2 / math.sqrt(96)) - 1) < 0.02
    conv = f(ck.ENC + "conv_layers.1.conv.weight")  # fan_in = 64 * 3
    assert abs(conv.std() / (2 / math.sqrt(192)) - 1) < 0.05
    norm = np.concatenate([f(f"layers.{i}.{n}.weight") for i in range(2) for n in ("attention_norm", "ffn_norm")])
    assert abs(norm.mean() - 1) < 0.03 and abs(norm.std() - 0.1) < 0.03
    # BF16-representable: the float32 values survive a round trip
    assert np.array_equal(f32_to_bf16_bits(w1), ck.generate_tensor(specs["layers.0.feed_forward.w1.weight"], 0))


def test_deterministic_and_per_tensor(tmp_path):
    a = ck.make_checkpoint(tmp_path / "a", "tiny", "native", seed=3)["native"]
    b = ck.make_checkpoint(tmp_path / "b", "tiny", "native", seed=3)["native"]
    c = ck.make_checkpoint(tmp_path / "c", "tiny", "native", seed=4, n_layers=3)["native"]
    fa, fb = (a / "consolidated.safetensors").read_bytes(), (b / "consolidated.safetensors").read_bytes()
    assert fa == fb
    ta, tc = _load_bits(a / "consolidated.safetensors"), _load_bits(c / "consolidated.safetensors")
    assert "layers.2.attention.wq.weight" in tc
    assert not np.array_equal(ta["layers.0.attention.wq.weight"], tc["layers.0.attention.wq.weight"])
    # a tensor depends only on (seed, name): more layers leave layer 0 unchanged
    d = ck.make_checkpoint(tmp_path / "d", "tiny", "native", seed=3, dec_layers=3, enc_layers=1)["native"]
    td = _load_bits(d / "consolidated.safetensors")
    for k in ("layers.0.attention.wq.weight", ck.ENC + "transformer.layers.0.attention.wq.bias"):
        assert np.array_equal(ta[k], td[k])


def test_cli_single_layout(tmp_path, capsys):
    assert ck.main([str(tmp_path / "m"), "--preset", "tiny", "--layout", "hf", "--dec-layers", "1", "--quiet"]) == 0
    assert "hf:" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["text_config"]["num_hidden_layers"] == 1 and cfg["audio_config"]["num_hidden_layers"] == 2
    assert ck.main([str(tmp_path / "x"), "--preset", "tiny", "--vocab-size", "500", "--quiet"]) == 2


def test_streaming_writer(tmp_path):
    specs = [TensorSpec("a", "BF16", (3, 5)), TensorSpec("empty", "F32", (0,)), TensorSpec("b", "F32", (4,))]
    a = np.arange(15, dtype=np.uint16).reshape(3, 5)
    with SafetensorsWriter(tmp_path / "x.safetensors", specs, {"format": "pt"}) as w:
        w.write("a", a[:1])
        w.write("a", a[1:])  # in pieces
        w.write("b", np.array([1.5, -2, 0, 3], np.float32))
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        assert f.get_tensor("a").view(torch.int16).numpy().tolist() == a.tolist()
        assert f.get_tensor("b").tolist() == [1.5, -2, 0, 3]
        assert f.get_tensor("empty").shape == (0,)
    w = SafetensorsWriter(tmp_path / "y.safetensors", specs)
    with pytest.raises(ValueError, match="expected tensor 'a'"):
        w.write("b", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="closed before"):
        w.close()
    assert not (tmp_path / "y.safetensors").exists()


def test_bf16_rounding_matches_torch():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 7
    x[:4] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 65504.0]  # ties to even
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(f32_to_bf16_bits(x), want)


# --------------------------------------------------------------------------
# (d) the HF layout is the native tensors, q/k rows permuted


def test_unpermuted_hf_equals_native(tiny_ckpt):
    d = ck.resolve_dims("tiny")
    native = _load_bits(tiny_ckpt["native"] / "consolidated.safetensors")
    hf = _hf_bits(tiny_ckpt["hf"])
    assert len(native) == len(hf)
    n_permuted = 0
    for spec in ck.tensor_specs(d):
        h = hf[ck.native_to_hf_name(spec.name)]
        if spec.rope_heads:
            n_permuted += 1
            assert not np.array_equal(h, native[spec.name]), spec.name
            np.testing.assert_array_equal(ck.unpermute_from_rotate_half(h, *spec.rope_heads), native[spec.name])
        else:
            np.testing.assert_array_equal(h, native[spec.name])
    assert n_permuted == 3 * 2 + 2 * 2  # encoder wq, wq bias, wk; decoder wq, wk


def test_permutation_is_models_md_formula():
    t = torch.arange(4 * 8 * 3).reshape(4 * 8, 3)
    want = t.reshape(4, 4, 2, 3).transpose(1, 2).reshape(t.shape).numpy()
    np.testing.assert_array_equal(ck.permute_for_rotate_half(t.numpy(), 4, 8), want)
    b = torch.arange(32)
    np.testing.assert_array_equal(
        ck.permute_for_rotate_half(b.numpy(), 4, 8), b.reshape(4, 4, 2).transpose(1, 2).reshape(32).numpy()
    )


# --------------------------------------------------------------------------
# (b) transformers loads the HF layout cleanly; (c) mistral-common loads tekken.json


def test_transformers_loads_hf_layout(tiny_ckpt):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.VoxtralRealtimeForConditionalGeneration.from_pretrained(
        str(tiny_ckpt["hf"]), output_loading_info=True, dtype=torch.float32
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"]
    cfg = model.config
    assert cfg.audio_config.rope_parameters["rope_theta"] == 1e6 == cfg.text_config.rope_parameters["rope_theta"]
    assert cfg.audio_config.sliding_window == 750 and cfg.text_config.sliding_window == 8192
    assert cfg.text_config.head_dim == 32 and cfg.audio_config.head_dim == 32
    assert cfg.text_config.num_key_value_heads == 2 and cfg.text_config.vocab_size == 8192
    assert cfg.default_num_delay_tokens == 6 and cfg.audio_length_per_tok == 8 and cfg.downsample_factor == 4
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    native = _load_bits(tiny_ckpt["native"] / "consolidated.safetensors")
    emb = native["mm_streams_embeddings.embedding_module.tok_embeddings.weight"]
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), bf16_bits_to_f32(emb))


def test_tekken_loads_in_mistral_common(tiny_ckpt):
    mistral = pytest.importorskip("mistral_common.tokens.tokenizers.mistral")
    tok = mistral.MistralTokenizer.from_file(str(tiny_ckpt["native"] / "tekken.json"))
    raw = tok.instruct_tokenizer.tokenizer
    assert raw.n_words == 8192 and raw.num_special_tokens == 1000
    assert (raw.bos_id, raw.eos_id) == (1, 2)
    for name, rank in {"[AUDIO]": 24, "[BEGIN_AUDIO]": 25, "[STREAMING_PAD]": 32, "<unk>": 0, "[ARGS]": 20}.items():
        assert raw.get_special_token(name) == rank
    cfg = tok.instruct_tokenizer.audio_encoder.audio_config
    assert cfg.sampling_rate == 16000 and cfg.frame_rate == 12.5 and cfg.transcription_delay_ms == 480
    assert cfg.get_num_delay_tokens() == 6 and cfg.n_left_pad_tokens == 32
    ids = raw.encode("And so, my fellow Americans", bos=False, eos=False)
    assert all(1000 <= i < 8192 for i in ids) and raw.decode(ids) == "And so, my fellow Americans"
    transformers = pytest.importorskip("transformers")
    backend = transformers.MistralCommonBackend.from_pretrained(str(tiny_ckpt["hf"]))
    assert backend.tokenizer.instruct_tokenizer.audio_encoder.audio_config.streaming_n_left_pad_tokens == 32


def test_full_vocab_tekken():
    t = ck.build_tekken(131072)
    assert len(t["vocab"]) == 130072 and t["config"]["default_vocab_size"] == 131072
    assert [s["rank"] for s in t["special_tokens"]] == list(range(1000))
    assert (
        t["special_tokens"][32]["token_str"] == "[STREAMING_PAD]"
        and t["special_tokens"][500]["token_str"] == "<SPECIAL_500>"
    )


# --------------------------------------------------------------------------
# (e) the reference's greedy output on real speech is varied


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("transformers")
    pytest.importorskip("mistral_common")
    import reference as ref_mod

    return ref_mod


def test_reference_tokens_are_varied(tiny_ckpt, audio_dir, reference):
    audio = reference.read_wav_16k(audio_dir / "jfk.wav")
    r = reference.reference_offline(tiny_ckpt["hf"], audio, delay_ms=480)
    tokens = r["tokens"]
    assert r["input_ids"] == [1] + [32] * 38 and r["num_delay_tokens"] == 6
    n_pos = r["input_features"].shape[1] // 8
    assert r["audio_embeds"].shape == (n_pos, 96) and r["encoder_out"].shape == (4 * n_pos, 64)
    assert len(tokens) == len(r["step_logits"]) and 0 < len(tokens) <= n_pos - len(r["input_ids"]) + 1
    assert r["step_logits"].shape[1] == 8192 and r["step_logits"].dtype == np.float32
    np.testing.assert_array_equal(r["step_logits"].argmax(axis=1), tokens)  # greedy
    distinct = len(set(tokens)) / len(tokens)
    print(f"tiny reference on jfk.wav: {len(set(tokens))} distinct of {len(tokens)} ({distinct:.0%})")
    assert distinct >= 0.5, tokens
    assert max(tokens.count(t) for t in set(tokens)) < 0.2 * len(tokens), tokens


def test_manual_padding_matches_processor(tiny_ckpt, audio_dir, reference):
    pytest.importorskip("soundfile", reason="the processor's offline path serialises audio with soundfile")
    audio = reference.read_wav_16k(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    p = reference.processor_inputs(tiny_ckpt["hf"], audio)
    assert p["input_ids"] == reference.manual_prompt(480) and p["num_delay_tokens"] == 6
    np.testing.assert_array_equal(
        p["input_features"], reference.reference_log_mel(reference.manual_padded_audio(audio, 480))
    )
    for delay in (80, 160, 960, 2400):  # mistral-common's padding == model.md's recipe (asserted inside)
        m = reference.mistral_common_inputs(tiny_ckpt["hf"], audio, delay)
        assert len(m["input_ids"]) == 33 + delay // 80 and len(m["padded_audio"]) % 1280 == 0


def test_unpermuted_hf_weights_change_the_reference_tokens(tiny_ckpt, audio_dir, reference, tmp_path):
    """Negative control: the q/k permutation matters (rows in native order are
    a different model), so token parity detects a wrong RoPE convention."""
    import shutil

    audio = reference.read_wav_16k(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    good = reference.reference_offline(tiny_ckpt["hf"], audio)["tokens"]
    bad_dir = tmp_path / "hf_unpermuted"
    shutil.copytree(tiny_ckpt["hf"], bad_dir)
    d = ck.resolve_dims("tiny")
    rope = {ck.native_to_hf_name(s.name): s.rope_heads for s in ck.tensor_specs(d) if s.rope_heads}
    index = json.loads((bad_dir / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        bits = _load_bits(bad_dir / shard)
        specs = [TensorSpec(k, "BF16", v.shape) for k, v in bits.items()]
        with SafetensorsWriter(bad_dir / shard, specs, {"format": "pt"}) as w:
            for k, v in bits.items():
                w.write(k, ck.unpermute_from_rotate_half(v, *rope[k]) if k in rope else v)
    bad = reference.reference_offline(bad_dir, audio)["tokens"]
    assert bad != good


@pytest.mark.slow
def test_fullwidth_reference_tokens_are_varied(fullwidth_ckpt, audio_dir, reference):
    """Full width (3072/1280, real vocab, 2+2 layers): measured 33/73 distinct at
    480 ms and 31/73 at 960 ms on this clip (embedding_std 0.25)."""
    model = reference.load_reference(fullwidth_ckpt["hf"])
    audio = reference.read_wav_16k(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    tokens = reference.reference_offline(model, audio, delay_ms=960)["tokens"]
    assert len(set(tokens)) >= 0.35 * len(tokens), tokens


# ---- the generator as a user runs it: the extra it needs, no debris on failure ----


def test_missing_mistral_common_names_the_extra_and_leaves_nothing(tmp_path, monkeypatch):
    from voxtral.testing import checkpoint

    monkeypatch.setitem(sys.modules, "mistral_common", None)
    out = tmp_path / "new" / "ckpt"
    with pytest.raises(checkpoint.MissingExtraError, match=r"pip install 'voxtral\[testing\]'"):
        checkpoint.make_checkpoint(out, preset="tiny", layout="both")
    assert not (tmp_path / "new").exists()
    rc = checkpoint.main([str(out), "--quiet"])
    assert rc == 2 and not (tmp_path / "new").exists()


def test_missing_extra_one_line_from_the_command(tmp_path):
    code = (
        "import sys; sys.modules['mistral_common'] = None; "
        "from voxtral.testing.checkpoint import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "voxtral[testing]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["native", "hf", "both"])
def test_failure_midway_removes_what_it_wrote(tmp_path, monkeypatch, layout):
    from voxtral.testing import checkpoint

    real = checkpoint.generate_tensor
    calls = []

    def failing(spec, seed, *args):
        calls.append(spec.name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(spec, seed, *args)

    monkeypatch.setattr(checkpoint, "generate_tensor", failing)
    with pytest.raises(OSError):
        checkpoint.make_checkpoint(tmp_path / "fresh", preset="tiny", layout=layout)
    assert not (tmp_path / "fresh").exists()
    # a directory that existed before (pytest's tmp dirs) stays, empty again
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep")
    calls.clear()
    with pytest.raises(OSError):
        checkpoint.make_checkpoint(existing, preset="tiny", layout=layout)
    assert sorted(p.name for p in existing.iterdir()) == ["mine.txt"]


def test_failure_after_the_tensors_removes_them_too(tmp_path, monkeypatch):
    from voxtral.testing import checkpoint

    def broken(d):
        raise ValueError("config cannot be written")

    monkeypatch.setattr(checkpoint, "hf_config_json", broken)
    with pytest.raises(ValueError):
        checkpoint.make_checkpoint(tmp_path / "x", preset="tiny", layout="both")
    assert not (tmp_path / "x").exists()


def test_testing_extra_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert any(r.startswith("mistral-common") for r in extras["testing"])
    assert "voxtral[testing]" in extras["test"]
