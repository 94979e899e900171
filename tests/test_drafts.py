"""Drafted verification (several decoder steps per pass, drafts = STREAMING_PAD,
rejected rows rolled back out of the KV cache) gives exactly the token ids
of step-by-step decoding (draft_steps=1): in every mode (weights x KV cache),
any chunking, any delay, with rejections at every position of the window,
across the sliding window and the caches' compaction.

Random weights rarely emit pads, so the checkpoints here scale the pad
token's embedding row (``pad_gain``) until greedy output is a mix of pads and
other tokens: the drafts are then accepted in part, rejected in part."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxtral
from stream_util import mode_dirs, stream_tokens
from voxtral.audio import load_audio
from voxtral.drafts import Drafter, DraftSource, DraftStats
from voxtral.kvcache import KVCache
from voxtral.linear import linear

WAV = "night1968_5s_dont_worry_about_him.wav"
DRAFTS = ["pad", "energy", "word", "energy,pad", "word,energy,pad", "word,pad", "pad,energy"]
MODES = [("bf16", "f32"), ("bf16", "int8"), ("q8_0", "bf16"), ("q4_0", "int8"), ("q4_k", "f32")]


@pytest.fixture(scope="module")
def pad_dirs(tmp_path_factory):
    """dim-256 tiny checkpoint (q4_k rows need multiples of 256) whose greedy
    output mixes pads and other tokens in every mode (2.5 left the repacked q4_0
    kernels at 7%), and its quantized copies. The share moves with any change
    of rounding: the quantized modes round activations to int8, and a random
    model carries one flipped rounding far (q4_k/f32 went from 29% to 92% pads
    when the fp32 attention's sum order changed, its values within 2e-6)."""
    return mode_dirs(tmp_path_factory.mktemp("drafts"), pad_gain=2.8)


@pytest.fixture(scope="module")
def window_dir(tmp_path_factory):
    """tiny with windows of 48/40 positions and about half pads: drafts cross
    the sliding window and the compactions."""
    from voxtral.testing.checkpoint import make_checkpoint

    return make_checkpoint(
        tmp_path_factory.mktemp("drafts_window"),
        preset="tiny",
        layout="native",
        sliding_window=48,
        enc_sliding_window=40,
        pad_gain=8.0,
    )["native"]


@pytest.fixture(scope="module")
def audio(audio_dir):
    return load_audio(audio_dir / WAV)


@pytest.mark.parametrize("weights,kv", MODES)
def test_drafts_give_the_step_by_step_tokens(pad_dirs, audio, weights, kv):
    model = voxtral.load(pad_dirs[weights], kv_cache=kv)
    exact = model.transcribe(audio, 16000, draft_steps=1).token_ids
    pads = sum(i == model.tokenizer.streaming_pad_id for i in exact)
    assert 5 <= pads <= len(exact) - 5  # pad drafts are accepted, and rejected, several times

    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        k=st.integers(2, 16),
        delay=st.sampled_from([80, 480, 960]),
        sizes=st.lists(
            st.one_of(st.integers(1, 400), st.integers(401, 4000), st.integers(4001, 40000)), min_size=1, max_size=5
        ),
        drafts=st.sampled_from(DRAFTS),
    )
    def drafted(k, delay, sizes, drafts):
        alone = model.transcribe(audio, 16000, delay_ms=delay, draft_steps=1).token_ids
        assert stream_tokens(model, audio, sizes, delay_ms=delay, draft_steps=k, drafts=drafts) == alone

    drafted()


class _OracleWithOneError(DraftSource):
    """A draft source that knows the true tokens and gets the i-th draft of
    its n-th proposal wrong (i cycling through the window): a rejection at
    every position of the window, and full windows accepted in between."""

    name = "oracle"

    def __init__(self, truth: list[int], k: int, position0: int):
        self.truth, self.k, self.position0, self.calls = truth, k, position0, 0

    def extend(self, position, n, draft, history) -> list[int]:
        self.calls += 1
        position += len(draft)
        drafts = [self.truth[position - self.position0 + i] for i in range(n)]
        wrong = self.calls % (self.k + 1)  # k: no error this time
        if wrong < n:
            drafts[wrong] = (drafts[wrong] + 1) % 1000
        return drafts


@pytest.mark.parametrize("kv,drafts", [("f32", ""), ("int8", ""), ("f32", "word,energy"), ("int8", "energy,word")])
def test_rejection_at_every_position_of_the_window(pad_dirs, audio, kv, drafts):
    """Drafts rejected at each position 0..K-2 of the window, and whole
    windows accepted: the tokens still equal K = 1 (also behind the word and
    energy sources, whose own drafts come first)."""
    model = voxtral.load(pad_dirs["bf16"], kv_cache=kv)
    exact = model.transcribe(audio, 16000, draft_steps=1).token_ids
    k = 6
    stream = model.stream(draft_steps=k, drafts=drafts or None)
    sources = stream.drafter.sources if drafts else []
    stream.drafter = Drafter(sources + [_OracleWithOneError(exact, k - 1, len(stream.prompt))])
    outcomes = set()
    accept = stream.accept

    def counting(step, logits):
        events = accept(step, logits)
        outcomes.add((step.rows.n_out, len(events)))
        return events

    stream.accept = counting
    ids = [e.token_id for e in stream.feed(audio) + stream.finish() if e.token_id >= 0]
    assert ids == exact
    assert {(k, a) for a in range(1, k + 1)} <= outcomes, sorted(outcomes)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(2, 12),
    kv=st.sampled_from(["f32", "bf16", "int8"]),
    sizes=st.lists(st.integers(160, 3 * 16000), min_size=1, max_size=4),
)
def test_drafts_across_window_slides_and_compaction(window_dir, audio_dir, k, kv, sizes):
    model = voxtral.load(window_dir, kv_cache=kv)
    audio = load_audio(audio_dir / "night1968_15s_there_are_two_of_them_out_there.wav")
    exact = model.transcribe(audio, 16000, draft_steps=1).token_ids
    assert len(exact) > 3 * 48
    assert stream_tokens(model, audio, sizes, draft_steps=k) == exact
    drafted = model.stream(draft_steps=k)
    drafted.feed(audio)
    drafted.finish()
    assert drafted.tokens == exact
    cache = drafted.memory["decoder_cache"]
    assert cache.compactions > 2 and drafted.passes < len(exact)  # compacted, and drafts were accepted


def test_steps_per_pass_are_counted(window_dir, audio):
    model = voxtral.load(window_dir)
    e = model.engine
    before = (e.passes, e.tokens, e.stream_steps)
    stream = model.stream(draft_steps=8)
    stream.feed(audio)
    stream.finish()
    passes, tokens, steps = (e.passes - before[0], e.tokens - before[1], e.stream_steps - before[2])
    assert tokens == len(stream.tokens) and passes == steps == stream.passes
    assert tokens / passes > 1.5  # about half pads: several steps per pass


@pytest.mark.parametrize("weights", ["bf16", "q8_0", "q4_0", "q4_k"])
def test_matrix_rows_do_not_depend_on_the_batch(pad_dirs, weights):
    """What drafts rely on: a row's product is the same bits for every M used (1..16)."""
    model = voxtral.load(pad_dirs[weights])
    lw = model.weights.decoder_layers[0]
    rng = np.random.default_rng(0)
    for w in (lw.wq, lw.w1, lw.w2, model.weights.tok_embeddings):
        cols = w.cols if hasattr(w, "cols") else w.shape[1]
        x = rng.standard_normal((16, cols), dtype=np.float32)
        alone = np.concatenate([linear(x[i : i + 1], w) for i in range(16)])
        for m in (2, 3, 5, 8, 16):
            assert np.array_equal(linear(x[:m], w), alone[:m])


@pytest.mark.parametrize("kind", ["f32", "bf16", "int8"])
def test_rollback_forgets_rows(kind):
    """Rows written then rolled back leave the cache as if never written; the next rows take their place."""
    rng = np.random.default_rng(1)
    a = KVCache(1, 8, window=6, initial_rows=4, dtype=kind, n_kv_heads=2)
    b = KVCache(1, 8, window=6, initial_rows=4, dtype=kind, n_kv_heads=2)
    rows = [rng.standard_normal((1, 8), dtype=np.float32) for _ in range(12)]
    for i, r in enumerate(rows):
        for cache, extra in ((a, 3), (b, 1)):
            junk = rng.standard_normal((extra - 1, 8), dtype=np.float32)
            block = np.concatenate([r, junk])
            cache.reserve(extra)
            cache.store(0, block, block)
            cache.commit(extra)
            cache.rollback(extra - 1)
        assert a.next_pos == b.next_pos == i + 1
        n = min(a.length, b.length)  # the rows both still hold (they compact at different times)
        assert n >= min(i + 1, 5)
        for x, y in zip(a.keys_values(0, 0), b.keys_values(0, 0), strict=True):
            assert np.array_equal(x[-n:], y[-n:])
    with pytest.raises(ValueError):
        a.rollback(a.length + 1)


# ---- the draft sources (drafts.py) on the trained model: pads at a speech-like rate ----


@pytest.fixture(scope="module")
def trained():
    from trained_util import HELDOUT_DIR, MODEL_DIR

    return voxtral.load(MODEL_DIR), [load_audio(HELDOUT_DIR / f"utt{i:03d}.flac") for i in (0, 1, 2)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(2, 32),
    delay=st.sampled_from([80, 160, 480, 960, 2400]),
    drafts=st.sampled_from(DRAFTS),
    which=st.integers(0, 2),
    sizes=st.lists(st.one_of(st.integers(1, 2000), st.integers(2001, 40000)), min_size=1, max_size=4),
)
def test_sources_give_the_step_by_step_tokens_on_the_trained_model(trained, k, delay, drafts, which, sizes):
    model, utterances = trained
    audio = utterances[which]
    alone = model.transcribe(audio, 16000, delay_ms=delay, draft_steps=1).token_ids
    assert stream_tokens(model, audio, sizes, delay_ms=delay, draft_steps=k, drafts=drafts) == alone


def test_draft_statistics_add_up(trained):
    """Per source: accepted <= drafted; over the sources, the engine's rows are
    one per pass + the prompt's extra rows + every drafted row, and its tokens
    one per pass + every accepted row; the energy source is right on the
    trained model's speech (its rule was measured there) and saves passes."""
    model, utterances = trained
    e = model.engine
    for audio in utterances:
        before = (e.passes, e.rows, e.tokens, {n: (d.drafted, d.accepted) for n, d in e.drafts.items()})
        stream = model.stream(draft_steps=16, drafts="word,energy,pad")
        stream.feed(audio)
        stream.finish()
        stats = stream.drafter.stats
        assert set(stats) == {"word", "energy", "pad"}
        drafted = sum(d.drafted for d in stats.values())
        accepted = sum(d.accepted for d in stats.values())
        assert all(0 <= d.accepted <= d.drafted and d.wasted == d.drafted - d.accepted for d in stats.values())
        passes, rows, tokens = e.passes - before[0], e.rows - before[1], e.tokens - before[2]
        assert passes == stream.passes and tokens == len(stream.tokens)
        assert rows == passes + len(stream.prompt) - 1 + drafted
        assert tokens == passes + accepted
        for name, d in stats.items():  # the engine counts the same (over every stream it ran)
            d0, a0 = before[3].get(name, (0, 0))
            now = e.drafts.get(name, DraftStats())  # a source that never drafted has no entry
            assert (now.drafted - d0, now.accepted - a0) == (d.drafted, d.accepted)
        assert stats["energy"].drafted > 10 and stats["energy"].acceptance > 0.9
        assert stream.passes < len(stream.tokens) / 3


def test_energy_source_drafts_pads_in_silence_and_stops_at_onsets():
    """Blocks of 4 samples (one per position), delay 2: the token at position p
    describes block p - 1 - 2 - first_position. Silence: pads as far as the
    audio goes (minus the look-ahead); a steady loud tone: pads (no onset);
    a rise of 20 dB: the draft stops before the steps that may start a word."""
    from voxtral.drafts import EnergyDrafts

    src = EnergyDrafts(pad_id=32, first_position=10, samples_per_token=4, n_delay=2)
    src.audio(np.zeros(4 * 8, dtype=np.float32))  # blocks 0..7 silent
    first = 10 + 1 + 2  # token position of block 0
    assert src.extend(first, 20, [], []) == [32] * 7  # blocks 0..6 (block 7 + 1 not pushed yet)
    assert src.extend(first, 3, [], []) == [32] * 3
    loud = np.full(4 * 6, 0.1, dtype=np.float32)  # -20 dBFS, blocks 8..13
    src.audio(loud)
    # block 6: s+1 = 7 silent -> pad; block 7: s+1 = 8 loud (a 60 dB rise) -> stop
    assert src.extend(first + 5, 20, [], []) == [32, 32]
    # blocks 10, 11: steady (s-2..s+2 all at -20 dBFS, 10 and 11 need 12, 13) -> pads; 12 needs block 14
    assert src.extend(first + 10, 20, [], []) == [32, 32]
    assert src.extend(first + 9, 20, [32], []) == [32, 32]  # the draft so far counts: block 10 onwards
    src.audio(np.zeros(3, dtype=np.float32))  # part of a block: not known yet
    assert src.extend(first + 12, 20, [], []) == []


def test_word_source_drafts_the_rest_of_a_word_seen_before():
    from voxtral.drafts import WordDrafts

    pad, ctl = 32, 5
    src = WordDrafts(pad, lambda t: t < 1000)
    hist = [pad, 1001, 1002, 1003, pad, pad, 1001]
    assert src.extend(0, 8, [], hist) == [1002, 1003]  # the rest of the word 1001 1002 1003
    assert src.extend(0, 1, [], hist) == [1002]  # at most n
    assert src.extend(0, 8, [pad], hist) == []  # only first in a draft
    hist += [1002]
    assert src.extend(0, 8, [], hist) == [1003]
    hist += [1009, pad, 1001, 1002]  # the same prefix, a newer ending wins
    assert src.extend(0, 8, [], hist) == [1009]
    hist += [ctl, 1004]  # a control token ends a word too; an unseen word: nothing
    assert src.extend(0, 8, [], hist) == []


def test_drafts_option_is_checked():
    from voxtral.errors import UsageError
    from voxtral.options import Options

    assert Options(drafts="word,energy,pad").drafts == "word,energy,pad"
    for bad in ("", "pad,pad", "silence", "pad,", 3):
        with pytest.raises(UsageError):
            Options(drafts=bad)


def test_metrics_render_draft_sources():
    from voxtral.server.metrics import Metrics

    m = Metrics()
    m.add_drafts({"pad": DraftStats(10, 7, 3), "energy": DraftStats(4, 4, 2)})
    m.add_drafts({"pad": DraftStats(10, 1, 2)})
    text = m.render()
    assert 'voxtral_draft_rows_total{source="pad"} 20\n' in text
    assert 'voxtral_draft_accepted_rows_total{source="pad"} 8\n' in text
    assert 'voxtral_draft_acceptance_ratio{source="pad"} 0.4\n' in text
    assert 'voxtral_draft_acceptance_ratio{source="energy"} 1\n' in text


def test_energy_source_backs_off_where_its_rule_fails():
    """Its own rejections shrink its window (2a + 1) until its drafts hold again;
    a rejection among the pads guessed after its run does not."""
    from voxtral.drafts import Draft, EnergyDrafts

    src = EnergyDrafts(pad_id=32, first_position=10, samples_per_token=4, n_delay=2)
    src.audio(np.zeros(4 * 12, dtype=np.float32))
    first = 10 + 1 + 2
    assert len(src.extend(first, 20, [], [])) == 11
    src.update(Draft([32] * 11, ["energy"] * 11), 0)  # its first draft was wrong
    assert src.extend(first, 20, [], []) == [32]
    src.update(Draft([32], ["energy"]), 1)  # held
    assert len(src.extend(first, 20, [], [])) == 11
    src.update(Draft([32] * 4, ["energy"] * 3 + ["pad"]), 3)  # the pad source's guess failed
    assert len(src.extend(first, 20, [], [])) == 11


def test_a_source_whose_drafts_never_hold_rests():
    """After REST_AFTER misses in a row a source drafts nothing for 2, 4, ..
    REST_MAX of its turns (random weights emit no pads: otherwise a wasted
    row every step); one row that holds ends the rest."""
    from voxtral.drafts import REST_AFTER, REST_MAX, Draft, PadDrafts

    src = PadDrafts(pad_id=32)
    rows = []
    for _ in range(120):
        got = src.extend(0, 8, [], [])
        rows.append(len(got))
        src.update(Draft(got, ["pad"] * len(got)), 0)  # none held
    assert rows[:REST_AFTER] == [8] + [1] * (REST_AFTER - 1)  # the window shrinks first
    gaps, run = [], 0
    for n in rows[REST_AFTER:]:
        if n:
            gaps.append(run)
            run = 0
        else:
            run += 1
    assert set(rows) == {0, 1, 8}
    assert gaps[:6] == [min(REST_MAX, 2**k) for k in range(1, 7)]
    assert sum(rows[40:]) <= len(rows[40:]) / REST_MAX + 1
    while not src.extend(0, 8, [], []):  # wait for its next try, then let it hold
        src.update(Draft(), 0)
    src.update(Draft([32], ["pad"]), 1)
    assert src.extend(0, 8, [], []) == [32] * 3  # 2a + 1, no rest
