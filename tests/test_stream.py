"""Streaming: any chunking of the audio gives exactly the offline tokens,
flush() keeps the stream exact, memory stays bounded past the attention
windows, and the stream API accepts int16 / other rates / async iteration."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxtral
from stream_util import stream_tokens
from voxtral.audio import load_audio


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"])


@pytest.fixture(scope="module")
def recordings(audio_dir):
    return {p.stem: load_audio(p) for p in sorted(audio_dir.glob("*.wav"))}


@pytest.fixture(scope="module")
def offline_tokens(model, recordings):
    return {name: model.transcribe(audio, 16000).token_ids for name, audio in recordings.items()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["jfk", "night1968_5s_dont_worry_about_him", "night1968_15s_there_are_two_of_them_out_there"]),
    sizes=st.lists(
        st.one_of(st.integers(1, 50), st.integers(51, 4000), st.integers(4001, 16000 * 60)), min_size=1, max_size=8
    ),
)
def test_any_chunking_gives_offline_tokens(model, recordings, offline_tokens, name, sizes):
    assert stream_tokens(model, recordings[name], sizes) == offline_tokens[name]


def test_single_samples_and_uneven_pieces(model, recordings, offline_tokens):
    audio = recordings["night1968_5s_dont_worry_about_him"]
    assert stream_tokens(model, audio[:4000], [1]) == model.transcribe(audio[:4000], 16000).token_ids
    assert stream_tokens(model, audio, [3, 1279, 1281, 7]) == offline_tokens["night1968_5s_dont_worry_about_him"]


def test_int16_feed_equals_float(model, audio_dir):
    import wave

    with wave.open(str(audio_dir / "night1968_5s_dont_worry_about_him.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    a = model.stream()
    ta = [e.token_id for e in a.feed(pcm) + a.finish() if e.token_id >= 0]
    assert ta == model.transcribe(pcm.astype(np.float32) / 32768, 16000).token_ids


def test_other_rate_is_resampled_incrementally(model, recordings):
    import soxr

    audio = recordings["night1968_5s_dont_worry_about_him"]
    audio_8k = soxr.resample(audio, 16000, 8000, quality="HQ").astype(np.float32)
    stream = model.stream(sample_rate=8000)
    events = []
    for i in range(0, len(audio_8k), 333):
        events += stream.feed(audio_8k[i : i + 333])
    events += stream.finish()
    assert abs(stream.samples_in - len(audio)) <= 2
    ids = [e.token_id for e in events if e.token_id >= 0]
    assert len(ids) > 10 and len(set(ids)) > 5


def test_flush_emits_delay_and_stays_exact(model, recordings):
    audio = recordings["jfk"]
    a, b = audio[: 5 * 16000 + 123], audio[5 * 16000 + 123 :]
    stream = model.stream(480)
    stream.feed(a)
    flushed = stream.flush()
    assert flushed, "flush produced nothing"
    rest = stream.feed(b) + stream.finish()
    spt = model.config.audio.samples_per_token
    pad = (-len(a)) % spt + (stream.n_delay + 1) * spt
    silence_inserted = np.concatenate([a, np.zeros(pad, np.float32), b])
    assert stream.tokens == model.transcribe(silence_inserted, 16000).token_ids
    # after a flush the tokens describe all of `a`: the stream has decoded past its end
    assert flushed[-1].end >= len(a) / 16000 - 0.08
    assert rest


def test_timestamps_and_segments(model, recordings):
    result = model.transcribe(recordings["jfk"], 16000)
    starts = [e.start for e in result.events if e.token_id >= 0]
    assert starts == sorted(starts)
    assert all(0 <= e.start <= e.end <= result.duration + 1.5 for e in result.events)
    for seg in result.segments:
        assert seg.start <= seg.end and seg.words
        assert seg.text.replace(" ", "") == "".join(w.word for w in seg.words).replace(" ", "")
    joined = "".join(w.word for w in result.words)
    assert joined.split() == result.text.split()


def test_async_iteration(model, recordings):
    audio = recordings["night1968_5s_dont_worry_about_him"]

    async def chunks():
        for i in range(0, len(audio), 8000):
            yield audio[i : i + 8000]

    async def collect():
        return [e.token_id async for e in model.stream().atranscribe_chunks(chunks()) if e.token_id >= 0]

    assert asyncio.run(collect()) == model.transcribe(audio, 16000).token_ids


def test_feed_converts_like_load_audio(model, recordings):
    """feed() uses the same sample conversion as load_audio: int32 and
    [samples, channels] are accepted and give the same tokens as mono float."""
    audio = recordings["jfk"][: 3 * 16000]
    i32 = np.round(audio * 2**31 * 0.999).astype(np.int32)
    stereo = np.stack([audio, audio], axis=1)
    expected = model.transcribe(audio, 16000).token_ids

    def ids(x):
        s = model.stream()
        return [e.token_id for e in s.transcribe_chunks([x]) if e.token_id >= 0]

    assert ids(stereo) == expected
    assert ids(i32) == model.transcribe((i32 / 2.0**31).astype(np.float32), 16000).token_ids


def test_bad_samples(model):
    stream = model.stream()
    with pytest.raises(voxtral.AudioError):
        stream.feed(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(voxtral.AudioError):
        stream.feed(np.zeros((10, 2, 2), dtype=np.float32))
    with pytest.raises(voxtral.AudioError):
        stream.feed(np.zeros(10, dtype=np.complex64))
    with pytest.raises(voxtral.AudioError):
        stream.feed(np.array(["a", "b"]))
    stream.finish()
    with pytest.raises(voxtral.UsageError):
        stream.feed(np.zeros(10, dtype=np.float32))
    with pytest.raises(voxtral.UsageError):
        model.stream(delay_ms=500)


def test_past_the_attention_windows_matches_reference(small_window_ckpt, audio_dir):
    """Past the windows the reference slides its attention (positions keep
    counting); so do we, and the tokens agree at every step."""
    reference = pytest.importorskip("reference")
    model = voxtral.load(small_window_ckpt["native"])
    assert model.config.decoder.sliding_window == 48 and model.config.encoder.sliding_window == 40
    audio = load_audio(audio_dir / "jfk.wav")
    ref = reference.reference_offline(reference.load_reference(small_window_ckpt["hf"]), audio, delay_ms=480)
    ours = model.stream(480, keep_logits=True)
    for i in range(0, len(audio), 2000):
        ours.feed(audio[i : i + 2000])
    ours.finish()
    assert len(ref["tokens"]) > 3 * 48
    assert ours.tokens == list(ref["tokens"])
    worst = max(
        float(np.abs(a - b).max()) / float(b.max() - b.min())
        for a, b in zip(ours.logits, ref["step_logits"], strict=True)
    )
    assert worst <= 1e-3


def test_memory_stays_bounded_on_a_long_stream(small_window_ckpt, audio_dir):
    """Ten minutes of audio through windows of 48/40: the KV buffers stop
    growing once the windows are full, and nothing else accumulates."""
    model = voxtral.load(small_window_ckpt["native"])
    speech = load_audio(audio_dir / "night1968_15s_there_are_two_of_them_out_there.wav")
    stream = model.stream(480)
    capacities = []
    for _ in range(40):  # 40 x 15 s = 10 minutes
        for i in range(0, len(speech), 16000):
            stream.feed(speech[i : i + 16000])
        held = stream.memory
        capacities.append((held["decoder_cache"].capacity, held["encoder_cache"].capacity))
        assert held["pending_embeddings"] <= 2
        assert held["mel_samples"] <= model.config.audio.window_size + 16000
    assert len(set(capacities[2:])) == 1, capacities
    cache = stream.memory["decoder_cache"]
    assert cache.capacity <= 48 - 1 + stream.options.draft_steps + cache.slack
    stream.finish()
    assert len(stream.tokens) > 7000
    # compaction (a memmove of the whole window) is rare: once per `slack` steps
    assert cache.compactions <= len(stream.tokens) // cache.slack + 2


@pytest.fixture(scope="module")
def long_synthetic(recordings):
    """Three minutes of speech-like audio: the recordings at random gains,
    with noise and gaps, deterministic."""
    rng = np.random.default_rng(3)
    parts = []
    total = 0
    while total < 180 * 16000:
        speech = recordings[rng.choice(sorted(recordings))] * rng.uniform(0.3, 1.5)
        gap = rng.standard_normal(int(rng.uniform(0.1, 2.0) * 16000)).astype(np.float32) * 0.003
        parts += [speech.astype(np.float32), gap]
        total += speech.shape[0] + gap.shape[0]
    return np.concatenate(parts)[: 180 * 16000]


@pytest.fixture(scope="module")
def small_window_model(small_window_ckpt):
    return voxtral.load(small_window_ckpt["native"])


@pytest.fixture(scope="module")
def long_offline(small_window_model, long_synthetic):
    return small_window_model.transcribe(long_synthetic, 16000).token_ids


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(160, 3 * 16000), min_size=1, max_size=6))
def test_long_synthetic_stream_through_sliding_windows(small_window_model, long_synthetic, long_offline, sizes):
    """Minutes of audio with windows of 48/40: streaming crosses the windows
    (and compacts the caches) at arbitrary points, offline at others; the
    tokens are the same."""
    assert len(long_offline) > 2000
    assert stream_tokens(small_window_model, long_synthetic, sizes) == long_offline
