"""Tests for voxtral.tokenizer: parity with mistral-common's Tekkenizer on a
Voxtral-style tekken.json built from mistral-common's shipped vocabulary."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import numpy as np
import pytest

from voxtral.errors import TokenizerError
from voxtral.tokenizer import StreamDecoder, TekkenTokenizer

mc_tekken = pytest.importorskip("mistral_common.tokens.tokenizers.tekken")
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy  # noqa: E402

Tekkenizer = mc_tekken.Tekkenizer

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "data" / "audio"
TRANSCRIPTS = sorted(AUDIO_DIR.glob("*.txt"))

NUM_SPECIAL = 1000
VOCAB_SIZE = 131072
NAMED_SPECIALS = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    20: "[ARGS]",
    21: "[CALL_ID]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    26: "[TRANSCRIBE]",
    32: "[STREAMING_PAD]",
    33: "[STREAMING_WORD]",
}
AUDIO_SECTION = {
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    "transcription_format": "streaming",
    "transcription_delay_ms": 480,
    "streaming_look_ahead_ms": 2.5,
    "streaming_look_back_ms": 52.5,
    "streaming_n_left_pad_tokens": 32,
}


def build_tekken_dict() -> dict:
    src = Path(mc_tekken.__file__).resolve().parents[2] / "data" / "tekken_240718.json"
    base = json.loads(src.read_text(encoding="utf-8"))
    special = [
        {"rank": i, "token_str": NAMED_SPECIALS.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(NUM_SPECIAL)
    ]
    cfg = dict(base["config"])
    cfg.update(default_vocab_size=VOCAB_SIZE, default_num_special_tokens=NUM_SPECIAL, version="v7")
    return {"config": cfg, "vocab": base["vocab"], "special_tokens": special, "audio": AUDIO_SECTION}


@pytest.fixture(scope="module")
def tekken_dict() -> dict:
    return build_tekken_dict()


@pytest.fixture(scope="module")
def tekken_path(tmp_path_factory, tekken_dict) -> Path:
    p = tmp_path_factory.mktemp("tok") / "tekken.json"
    p.write_text(json.dumps(tekken_dict), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def ours(tekken_path) -> TekkenTokenizer:
    return TekkenTokenizer.from_file(tekken_path)


@pytest.fixture(scope="module")
def ref(tekken_path):
    return Tekkenizer.from_file(tekken_path)


def mc_decode(ref, ids):
    return ref.decode(list(ids), special_token_policy=SpecialTokenPolicy.IGNORE)


@pytest.fixture(scope="module")
def id_pools(ours):
    """Interesting ids: control ids, lone bytes, pieces that are not valid UTF-8 on
    their own (fragments of multi-byte characters), multi-byte characters, ASCII words."""
    ns, vs = ours.num_special, ours.vocab_size
    fragments, multibyte, ascii_ = [], [], []
    for i in range(ns, vs):
        b = ours.token_bytes(i)
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            fragments.append(i)
            continue
        (ascii_ if s.isascii() else multibyte).append(i)
    return {
        "control": list(range(ns)),
        "byte": list(range(ns, ns + 256)),
        "fragment": fragments,
        "multibyte": multibyte,
        "ascii": ascii_,
    }


def random_ids(rng: random.Random, pools: dict, vocab_size: int) -> list[int]:
    n = rng.randint(1, 50)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(pools["control"][:40] if rng.random() < 0.7 else pools["control"]))
        elif r < 0.45:
            out.append(rng.choice(pools["fragment"]))
        elif r < 0.6:
            out.append(rng.choice(pools["byte"]))
        elif r < 0.8:
            out.append(rng.choice(pools["multibyte"]))
        elif r < 0.95:
            out.append(rng.choice(pools["ascii"]))
        else:
            out.append(rng.randrange(vocab_size))
    return out


# ---------------------------------------------------------------------------
# Basic properties


def test_properties(ours, ref):
    assert ours.vocab_size == VOCAB_SIZE == ref.n_words
    assert ours.num_special == NUM_SPECIAL == ref.num_special_tokens
    assert ours.bos_id == 1 == ref.bos_id
    assert ours.eos_id == 2 == ref.eos_id
    assert ours.streaming_pad_id == 32 == ref.get_special_token("[STREAMING_PAD]")
    assert ours.special_id("[AUDIO]") == 24 and ours.special_id("[BEGIN_AUDIO]") == 25
    assert ours.special_id("<SPECIAL_500>") == 500
    assert ours.special_name(32) == "[STREAMING_PAD]"
    assert ours.version == "v7"
    ac = ours.audio_config
    assert ac == AUDIO_SECTION and ac is not ours.audio_config
    assert ours.is_control(0) and ours.is_control(999) and not ours.is_control(1000)
    assert ours.token_bytes(5) == b"" and ours.token_bytes(1000) == b"\x00"
    assert ours.token_bytes(np.int64(1065)) == b"A"


def test_special_names_read_from_file(tekken_dict, tmp_path):
    d = dict(tekken_dict)
    d["special_tokens"] = [
        {"rank": 0, "token_str": "<unk>", "is_control": True},
        {"rank": 7, "token_str": "<s>", "is_control": True},
        {"rank": 3, "token_str": "</s>", "is_control": True},
        {"rank": 40, "token_str": "[STREAMING_PAD]", "is_control": True},
    ]
    d.pop("audio")
    tok = TekkenTokenizer.from_dict(d)
    assert (tok.bos_id, tok.eos_id, tok.streaming_pad_id) == (7, 3, 40)
    assert tok.special_name(1) == "<SPECIAL_1>"
    assert tok.audio_config is None
    with pytest.raises(TokenizerError, match=r"\[AUDIO\]"):
        tok.special_id("[AUDIO]")


def test_token_bytes_parity(ours, ref):
    rng = random.Random(0)
    ids = list(range(NUM_SPECIAL, NUM_SPECIAL + 2000)) + [rng.randrange(NUM_SPECIAL, VOCAB_SIZE) for _ in range(3000)]
    ids += [VOCAB_SIZE - 1]
    for i in ids:
        assert ours.token_bytes(i) == ref.id_to_byte_piece(i), i


def test_vocab_truncated_to_model_vocab(ours, tekken_dict):
    assert len(tekken_dict["vocab"]) > VOCAB_SIZE - NUM_SPECIAL
    last = base64.b64decode(tekken_dict["vocab"][VOCAB_SIZE - NUM_SPECIAL - 1]["token_bytes"])
    assert ours.token_bytes(VOCAB_SIZE - 1) == last
    with pytest.raises(TokenizerError, match="out of range"):
        ours.token_bytes(VOCAB_SIZE)


# ---------------------------------------------------------------------------
# Decode parity with mistral-common


def test_random_decode_parity(ours, ref, id_pools):
    rng = random.Random(1234)
    n_diff_tokens = 0
    for _ in range(3000):
        ids = random_ids(rng, id_pools, VOCAB_SIZE)
        want = mc_decode(ref, ids)
        assert ours.decode(ids) == want, ids
        # stream decoding gives the same text
        sd = ours.stream_decoder()
        parts = [sd.push(i) for i in ids]
        parts.append(sd.flush())
        assert "".join(parts) == want, ids
        n_diff_tokens += len(ids)
    assert n_diff_tokens > 3000


def test_decode_edge_cases(ours, ref):
    for ids in (
        [],
        [1],
        [1, 2, 32],
        [1000],
        [1000 + 0xC3],
        [1000 + 0xC3, 1000 + 0xA9],
        [1000 + 0xC3, 32, 1000 + 0xA9],
        [1000 + 0xF0, 1000 + 0x9F, 1000 + 0x98],
        [1000 + 0xE2, 1000 + 0x82, 1000 + 0xAC, 1000 + 0x80],
    ):
        assert ours.decode(ids) == mc_decode(ref, ids), ids
    assert ours.decode([1000 + 0xC3, 1000 + 0xA9]) == "é"
    assert ours.decode(np.array([1, 1000 + 0x41, 2])) == "A"
    assert ours.decode(iter([1000 + 0x41, 1000 + 0x42])) == "AB"


@pytest.mark.skipif(not TRANSCRIPTS, reason="shared transcripts not present")
@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.name)
def test_transcripts_round_trip(ours, ref, path):
    text = path.read_text(encoding="utf-8").strip()
    ids = ref.encode(text, bos=True, eos=True)
    assert ours.decode(ids) == text
    # with streaming pads sprinkled between tokens
    rng = random.Random(7)
    padded = []
    for i in ids:
        padded.extend([32] * rng.randint(0, 3))
        padded.append(i)
    assert ours.decode(padded) == text
    sd = ours.stream_decoder()
    assert "".join(sd.push(i) for i in padded) + sd.flush() == text


def test_multilingual_round_trip(ours, ref):
    texts = [
        "Ça va très bien, merci ! Größe",
        "日本語のテキスト、そして中文。",
        "Привет, как дела?",
        "emoji 🎉🚀 and ☃ snowman",
        "عربي مكتوب",
        "ελληνικά",
        "   spaces\n\tand tabs  ",
    ]
    for text in texts:
        ids = ref.encode(text, bos=False, eos=False)
        assert ours.decode(ids) == text
        sd = ours.stream_decoder()
        assert sd.push_many(ids) + sd.flush() == text


# ---------------------------------------------------------------------------
# Streaming


def test_stream_never_emits_replacement_midway(ours, ref):
    """Characters split into single-byte tokens come out whole once complete."""
    text = "naïve café — 日本 🎉 Привет"
    ids = [NUM_SPECIAL + b for b in text.encode("utf-8")]  # one byte per token
    sd = ours.stream_decoder()
    out = []
    for i in ids:
        piece = sd.push(i)
        assert "\ufffd" not in piece
        out.append(piece)
    out.append(sd.flush())
    assert "".join(out) == text
    # the multi-byte characters appear exactly when their last byte is pushed
    sd = ours.stream_decoder()
    emoji = "🎉".encode()
    assert [sd.push(NUM_SPECIAL + b) for b in emoji] == ["", "", "", "🎉"]
    assert not sd.pending
    assert sd.push(NUM_SPECIAL + 0xE6) == "" and sd.pending
    assert sd.flush() == "\ufffd"
    assert sd.flush() == ""


def test_stream_control_token_ends_run(ours, ref):
    sd = ours.stream_decoder()
    ids = [NUM_SPECIAL + 0xC3, 32, NUM_SPECIAL + 0xA9]
    text = sd.push(ids[0]) + sd.push(ids[1]) + sd.push(ids[2]) + sd.flush()
    assert text == ours.decode(ids) == mc_decode(ref, ids)


def test_stream_with_hypothesis(ours, ref, id_pools):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pool = (
        id_pools["control"][:40]
        + id_pools["byte"]
        + id_pools["fragment"][:2000]
        + id_pools["multibyte"][:2000]
        + id_pools["ascii"][:500]
    )
    ids_strategy = st.lists(st.one_of(st.sampled_from(pool), st.integers(0, VOCAB_SIZE - 1)), min_size=0, max_size=60)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(ids_strategy)
    def check(ids):
        want = mc_decode(ref, ids)
        assert ours.decode(ids) == want
        sd = ours.stream_decoder()
        emitted = []
        for i in ids:
            emitted.append(sd.push(i))
        emitted.append(sd.flush())
        assert "".join(emitted) == want

    check()


# ---------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match=r"nothere\.json: tokenizer file not found"):
        TekkenTokenizer.from_file(tmp_path / "nothere.json")
    with pytest.raises(TokenizerError, match=r"tekken\.json: tokenizer file not found"):
        TekkenTokenizer.from_file(tmp_path)  # a directory without tekken.json


def test_directory_with_tekken(tekken_path):
    tok = TekkenTokenizer.from_file(tekken_path.parent)
    assert tok.path == tekken_path


def test_bad_json(tmp_path):
    p = tmp_path / "tekken.json"
    p.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tekken\.json: not valid JSON"):
        TekkenTokenizer.from_file(p)
    p.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TokenizerError, match="JSON object"):
        TekkenTokenizer.from_file(p)


def small_dict(n_inner: int = 300, num_special: int = 10) -> dict:
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None} for i in range(256)]
    for i in range(256, n_inner):
        vocab.append({"rank": i, "token_bytes": base64.b64encode(f"tok{i}".encode()).decode(), "token_str": None})
    return {
        "config": {
            "default_vocab_size": n_inner + num_special,
            "default_num_special_tokens": num_special,
            "version": "v7",
            "pattern": "x",
        },
        "vocab": vocab,
        "special_tokens": [
            {"rank": 0, "token_str": "<unk>", "is_control": True},
            {"rank": 1, "token_str": "<s>", "is_control": True},
            {"rank": 2, "token_str": "</s>", "is_control": True},
        ],
    }


def write(tmp_path, d) -> Path:
    p = tmp_path / "tekken.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    return p


def test_small_file_ok(tmp_path):
    tok = TekkenTokenizer.from_file(write(tmp_path, small_dict()))
    assert tok.vocab_size == 310 and tok.num_special == 10
    assert tok.decode([1, 10 + 300 - 1, 10 + ord("!"), 2]) == "tok299!"
    with pytest.raises(TokenizerError, match="STREAMING_PAD"):
        _ = tok.streaming_pad_id


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda d: d.pop("vocab"), "'vocab' section is missing"),
        (lambda d: d.pop("config"), "'config' section is missing"),
        (lambda d: d["config"].pop("default_vocab_size"), "default_vocab_size is missing"),
        (lambda d: d["config"].update(default_num_special_tokens="10"), "positive integer"),
        (lambda d: d["config"].update(default_vocab_size=5), "must be below"),
        (lambda d: d["config"].update(default_vocab_size=400), "fewer than"),
        (lambda d: d["vocab"][260].update(token_bytes="!!!not base64"), "entry 260: token_bytes is not valid base64"),
        (lambda d: d["vocab"][261].pop("token_bytes"), "entry 261 has no 'token_bytes'"),
        (lambda d: d["vocab"][262].update(rank=5), "rank 5, expected 262"),
        (lambda d: d["vocab"][3].update(token_bytes=base64.b64encode(b"zz").decode()), "single byte 0x03"),
        (lambda d: d["vocab"][270].update(token_bytes=d["vocab"][271]["token_bytes"]), "duplicate"),
        (lambda d: d["special_tokens"].append({"rank": 10, "token_str": "[X]", "is_control": True}), "outside 0..9"),
        (
            lambda d: d["special_tokens"].append({"rank": 1, "token_str": "[X]", "is_control": True}),
            "two special tokens have rank 1",
        ),
        (lambda d: d["special_tokens"].append({"rank": 5, "token_str": "<s>", "is_control": True}), "defined twice"),
        (lambda d: d["special_tokens"].append({"token_str": "[X]"}), "needs 'rank'"),
        (lambda d: d.update(audio=[1]), "'audio' section"),
    ],
)
def test_malformed_files(tmp_path, mutate, msg):
    d = small_dict()
    mutate(d)
    p = write(tmp_path, d)
    with pytest.raises(TokenizerError, match=msg) as ei:
        TekkenTokenizer.from_file(p)
    assert str(p) in str(ei.value)


def test_legacy_file_without_special_tokens(tmp_path):
    d = small_dict()
    d.pop("special_tokens")
    tok = TekkenTokenizer.from_file(write(tmp_path, d))
    assert tok.bos_id == 1 and tok.eos_id == 2 and tok.special_name(9) == "[TOOL_CALLS]"


def test_ids_out_of_range(ours):
    for bad in (-1, VOCAB_SIZE, VOCAB_SIZE + 5, 2**40):
        with pytest.raises(TokenizerError, match="out of range"):
            ours.token_bytes(bad)
        with pytest.raises(TokenizerError, match="out of range"):
            ours.decode([1000, bad])
        with pytest.raises(TokenizerError, match="out of range"):
            ours.stream_decoder().push(bad)
        with pytest.raises(TokenizerError):
            ours.is_control(bad)
    with pytest.raises(TokenizerError, match="not an integer"):
        ours.decode([1.5])
    with pytest.raises(TokenizerError, match="not an integer"):
        ours.token_bytes("12")
    with pytest.raises(TokenizerError, match="not a special token"):
        ours.special_name(1000)


def test_stream_decoder_type(ours):
    assert isinstance(ours.stream_decoder(), StreamDecoder)
