"""The Hugging Face layout as published: a directory written by transformers'
own ``save_pretrained`` (tensor names ``audio_tower.*``,
``multi_modal_projector.*``, ``language_model.model.*``), not by our
generator, loads and gives the reference's tokens."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import voxtral
from voxtral.audio import load_audio
from voxtral.errors import CheckpointError

reference = pytest.importorskip("reference")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def published(tiny_ckpt, tmp_path_factory):
    """The tiny reference model rebuilt from its config and saved by
    ``save_pretrained`` in BF16 (exact: the generated weights are BF16)."""
    from transformers import VoxtralRealtimeForConditionalGeneration

    ref = reference.load_reference(tiny_ckpt["hf"])
    fresh = VoxtralRealtimeForConditionalGeneration(ref.config).to(torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(
        {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}, strict=False
    )
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    out = tmp_path_factory.mktemp("published") / "model"
    fresh.save_pretrained(out)
    for name in ("tekken.json", "preprocessor_config.json"):
        shutil.copy(tiny_ckpt["hf"] / name, out / name)
    return out


def _stored_names(d):
    from safetensors import safe_open

    names = []
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), framework="np") as s:
            names += list(s.keys())
    return names


def test_save_pretrained_writes_the_published_names(published):
    names = _stored_names(published)
    prefixes = {n.split(".")[0] for n in names}
    assert prefixes == {"audio_tower", "multi_modal_projector", "language_model"}, prefixes
    assert all(n.startswith("language_model.model.") for n in names if n.startswith("language_model."))


def test_published_layout_loads_and_matches_the_reference(tiny_ckpt, published, audio_dir):
    audio = load_audio(audio_dir / "night1968_5s_dont_worry_about_him.wav")
    ref_tokens = list(reference.reference_offline(reference.load_reference(tiny_ckpt["hf"]), audio)["tokens"])
    model = voxtral.load(published)
    assert model.layout == "hf"
    assert model.transcribe(audio, 16000).token_ids == ref_tokens
    assert len(set(ref_tokens)) > 5
    # transformers reads the same directory as the same model
    again = reference.reference_offline(reference.load_reference(published), audio)["tokens"]
    assert list(again) == ref_tokens


def _rewrite(src, dst, edit):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        tensors = {k: v for k, v in load_file(str(f)).items()}
        edit(tensors)
        save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


def test_saved_lm_head_is_accepted_when_it_fits(published, tiny_ckpt, tmp_path):
    emb = "language_model.model.embed_tokens.weight"

    def add_head(t):
        t["language_model.lm_head.weight"] = t[emb].clone()

    d = _rewrite(published, tmp_path / "with_head", add_head)
    w = voxtral.load(d).weights
    np.testing.assert_array_equal(w.tok_embeddings, voxtral.load(tiny_ckpt["native"]).weights.tok_embeddings)

    def bad_head(t):
        t["language_model.lm_head.weight"] = t[emb][:-1].clone()

    with pytest.raises(CheckpointError, match="lm_head"):
        voxtral.load(_rewrite(published, tmp_path / "bad_head", bad_head))


def test_both_spellings_of_one_tensor_are_refused(published, tmp_path):
    def duplicate(t):
        t["model.audio_tower.norm.weight"] = t["audio_tower.norm.weight"].clone()

    with pytest.raises(CheckpointError, match="appears twice"):
        voxtral.load(_rewrite(published, tmp_path / "dup", duplicate))
