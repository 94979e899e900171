"""Tests that read text: the trained checkpoint (tests/data/trained-synth)
transcribes held-out synthetic speech (voices and sentences it was not
trained on), and the CLI, the stream API, the server and the word timestamps
must give the words that espeak-ng was asked to say: references that come
from the synthesis, not from this package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from trained_util import EXACT_UTTERANCES, HELDOUT_DIR, entry, model_copy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    return model_copy(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def trained(trained_dir):
    import voxtral

    return voxtral.load(trained_dir)


def _samples(name: str) -> np.ndarray:
    return sf.read(HELDOUT_DIR / name, dtype="float32")[0]


def _words(text: str) -> list[str]:
    from voxtral.testing.wer import normalize

    return normalize(text).split()


@pytest.mark.parametrize("name", EXACT_UTTERANCES)
def test_transcribe_says_the_synthesized_words(trained, name):
    assert _words(trained.transcribe(_samples(name), sample_rate=16000).text) == entry(name)["words"]


def test_stream_api_says_the_synthesized_words(trained):
    name = EXACT_UTTERANCES[1]
    samples = _samples(name)
    stream = trained.stream(480)
    events = []
    for i in range(0, samples.shape[0], 1234):  # odd chunk size: no alignment with the 1280-sample slots
        events += stream.feed(samples[i : i + 1234])
    events += stream.finish()
    assert _words("".join(e.text for e in events)) == entry(name)["words"]


def test_cli_prints_the_synthesized_words(trained_dir, tmp_path):
    name = EXACT_UTTERANCES[2]
    wav = tmp_path / "speech.wav"
    sf.write(wav, _samples(name), 16000, subtype="PCM_16")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", str(wav), "--model", str(trained_dir), "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert _words(r.stdout) == entry(name)["words"]


def test_server_returns_the_synthesized_words(trained, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from server_util import running_server

    name = EXACT_UTTERANCES[0]
    wav = tmp_path / "speech.wav"
    sf.write(wav, _samples(name), 16000, subtype="PCM_16")
    with running_server(trained, names=("voxtral-trained",)) as srv:
        r = httpx.post(srv.base_url + "/v1/audio/transcriptions", files={"file": wav.read_bytes()}, timeout=120)
    assert r.status_code == 200, r.text
    assert _words(r.json()["text"]) == entry(name)["words"]


@pytest.mark.parametrize("name", EXACT_UTTERANCES)
def test_word_timestamps_within_80_ms_of_the_synthesis(trained, name):
    ref = entry(name)
    words = trained.transcribe(_samples(name), sample_rate=16000).words
    assert [_words(w.word)[0] for w in words] == ref["words"]
    for w, start in zip(words, ref["starts"], strict=True):
        assert abs(w.start - start) <= 0.08, (w.word, w.start, start)


def test_cli_draft_sources_say_the_same_words_and_report_themselves(trained_dir, tmp_path):
    """--drafts / --draft-steps end to end: drafted decoding prints the same
    words as step by step, fewer passes than steps, and a --verbose line per
    draft source that drafted; an unknown source is a one-line usage error."""
    name = EXACT_UTTERANCES[0]
    wav = tmp_path / "speech.wav"
    sf.write(wav, _samples(name), 16000, subtype="PCM_16")

    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "voxtral", str(wav), "--model", str(trained_dir), "--quiet", *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )

    drafted = run("--verbose", "--drafts", "word,energy,pad", "--draft-steps", "8")
    single = run("--verbose", "--draft-steps", "1")
    assert drafted.returncode == 0 and single.returncode == 0, drafted.stderr + single.stderr
    assert _words(drafted.stdout) == _words(single.stdout) == entry(name)["words"]
    steps = [line for line in drafted.stderr.splitlines() if "decoder steps in" in line]
    assert len(steps) == 1
    n_steps, n_passes = _steps_passes(steps[0])
    assert n_passes < n_steps
    for source in ("energy", "pad"):  # word drafts nothing on one utterance (no word repeats)
        assert any(line.startswith(f"voxtral: drafts by {source}:") for line in drafted.stderr.splitlines())
    bad = run("--drafts", "nope")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr


def _steps_passes(line: str) -> tuple[int, int]:
    """(steps, passes) from 'voxtral: S decoder steps in P passes (...)'."""
    words = line.split()
    return int(words[1]), int(words[words.index("in") + 1])
