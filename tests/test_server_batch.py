"""Batching never changes results: streams stepped together by the engine
give exactly (bit for bit) the logits and tokens of the same audio run alone
through a plain Stream, whatever the other streams do; and one stream's
failure stays that stream's."""

from __future__ import annotations

import numpy as np
import pytest

import voxtral
from voxtral.audio import load_audio


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"], download=False)


def _clips(audio_dir, rate):
    wavs = sorted(audio_dir.glob("*.wav"))
    clips = [load_audio(str(p), target_rate=rate)[: int(4.5 * rate)] for p in wavs[:3]]
    rng = np.random.default_rng(7)
    clips.append((0.1 * rng.standard_normal(int(2.3 * rate))).astype(np.float32))
    return clips


def _alone(model, audio, delay_ms, kv_cache):
    s = model.stream(delay_ms, keep_logits=True, kv_cache=kv_cache)
    events = s.feed(audio) + s.finish()
    return s, events


@pytest.mark.parametrize("window", ["default", "small"])
def test_batched_streams_equal_single_streams(request, audio_dir, window):
    ckpt = request.getfixturevalue("tiny_ckpt" if window == "default" else "small_window_ckpt")
    model = voxtral.load(ckpt["native"], download=False)
    rate = model.sample_rate
    clips = _clips(audio_dir, rate)
    delays = [480, 80, 960, 480]
    chunk = [1280, 4000, 640, 16000]  # samples per feed: different rates
    per_step = [1, 3, 2, 1]  # feeds between engine steps
    eng = model.engine
    kinds = ["f32", "int8", "bf16", "f32"]  # the engine mixes KV cache kinds in one pass
    streams = [model.stream(d, keep_logits=True, kv_cache=k) for d, k in zip(delays, kinds, strict=True)]
    got = {id(s): [] for s in streams}
    offsets = [0] * len(streams)
    max_batch = 0
    while any(o < len(c) for o, c in zip(offsets, clips, strict=True)):
        for i, s in enumerate(streams):
            for _ in range(per_step[i]):
                if offsets[i] < len(clips[i]):
                    s.push(clips[i][offsets[i] : offsets[i] + chunk[i]])
                    offsets[i] += chunk[i]
                    if offsets[i] >= len(clips[i]):
                        s.end()
        before = eng.stream_steps
        for s, ev in eng.step(streams).items():
            got[id(s)].extend(ev)
        max_batch = max(max_batch, eng.stream_steps - before)
    while any(not s.completed for s in streams):
        for s, ev in eng.step(streams).items():
            got[id(s)].extend(ev)
    assert max_batch > 1  # the streams really were batched
    for s, clip, delay, kind in zip(streams, clips, delays, kinds, strict=True):
        ref, ref_events = _alone(model, clip, delay, kind)
        assert s.completed
        assert s.tokens == ref.tokens
        assert len(s.logits) == len(ref.logits)
        for a, b in zip(s.logits, ref.logits, strict=True):
            assert np.array_equal(a, b)  # bit for bit
        assert [(e.token_id, e.text, e.position) for e in got[id(s)]] == [
            (e.token_id, e.text, e.position) for e in ref_events
        ]


def test_stream_split_keeps_single_stream_behaviour(model, audio_dir):
    """The Stream refactor (next_input/accept, end_audio/close_text) keeps
    streaming equal to one-shot transcription."""
    clip = _clips(audio_dir, model.sample_rate)[0]
    one = model.transcribe(clip, sample_rate=model.sample_rate)
    s = model.stream()
    ids = []
    for start in range(0, len(clip), 1280):
        ids += [e.token_id for e in s.feed(clip[start : start + 1280])]
    ids += [e.token_id for e in s.finish()]
    assert [i for i in ids if i >= 0] == one.token_ids


def test_a_failing_stream_leaves_the_others_alone(model, audio_dir):
    """A fault injected into one stream's step: that stream is reported as
    failed, the others of the same passes still get their single-stream tokens."""
    clips = _clips(audio_dir, model.sample_rate)[:3]
    streams = [model.stream(480) for _ in clips]
    bad = streams[1]

    def broken():
        raise RuntimeError("injected")

    bad.next_step = broken
    for s, clip in zip(streams, clips, strict=True):
        s.push(clip)
        s.end()
    failed: dict = {}
    got = {id(s): [] for s in streams}
    alive = list(streams)
    while any(not s.completed for s in alive):
        for s, ev in model.engine.step(alive, failed).items():
            got[id(s)] += [e.token_id for e in ev if e.token_id >= 0]
        alive = [s for s in alive if s not in failed]
    assert list(failed) == [bad] and str(failed[bad]) == "injected"
    for s, clip in ((streams[0], clips[0]), (streams[2], clips[2])):
        assert got[id(s)] == model.transcribe(clip, sample_rate=model.sample_rate).token_ids
    with pytest.raises(RuntimeError):  # without `failed` the error is the caller's
        model.engine.step([bad])
