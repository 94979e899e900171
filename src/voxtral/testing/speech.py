"""Synthetic English speech with exact word timings (espeak-ng), for training
and measuring a small model of the real architecture.

- Text: real English sentences from the Debian ``fortunes`` package
  (``/usr/share/games/fortunes``), lower-cased, split into sentences of 3-12
  words made only of letters and apostrophes; the vocabulary is the most
  frequent words of those sentences.
- Voices: espeak-ng voices x variants x speeds x pitches (``VoiceConfig``); the
  held-out configurations use variants that no training configuration uses.
- Words are synthesized one by one (silence trimmed) and concatenated with
  short random gaps, so each word's start and end sample is known exactly.

A *word bank* holds every vocabulary word spoken by every configuration
(16 kHz int16, one array plus offsets): the trainer draws any number of
utterances from it on the accelerator, where espeak-ng is not installed.

Command line::

    python -m voxtral.testing.speech bank OUT_DIR [--words N] [--voices N] [--seed S] [--raw]
    python -m voxtral.testing.speech bank OUT_DIR --text-only   # then, where espeak-ng is:
    python -m voxtral.testing.speech audio OUT_DIR [--workers N] [--raw]
    python -m voxtral.testing.speech heldout OUT_DIR [--words N] [--heldout N] [--seed S]

Both commands derive the same vocabulary and sentence split from the same
``--words``/``--vocab-size``/``--seed``, so held-out sentences never occur in
the bank's training sentences.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FORTUNE_DIR = Path("/usr/share/games/fortunes")
# fortune files whose text is mostly plain English prose
FORTUNE_FILES = (
    "art",
    "computers",
    "cookie",
    "definitions",
    "disclaimer",
    "drugs",
    "education",
    "ethnic",
    "food",
    "fortunes",
    "goedel",
    "humorists",
    "kids",
    "knghtbrd",
    "law",
    "linux",
    "linuxcookie",
    "literature",
    "love",
    "magic",
    "medicine",
    "men-women",
    "miscellaneous",
    "news",
    "paradoxum",
    "people",
    "pets",
    "platitudes",
    "politics",
    "pratchett",
    "riddles",
    "science",
    "songs-poems",
    "sports",
    "startrek",
    "tao",
    "wisdom",
    "work",
    "zippy",
)
_TRIM_THRESHOLD = 0.01  # of full scale: espeak's own leading/trailing silence is cut at this level
_TRIM_KEEP = 160  # samples kept beyond the threshold crossing (10 ms), so onsets are not clipped


@dataclass(frozen=True)
class VoiceConfig:
    voice: str  # espeak-ng voice with variant, e.g. "en-us+m3"
    speed: int  # words per minute
    pitch: int  # 0..99

    @property
    def name(self) -> str:
        return f"{self.voice}/s{self.speed}/p{self.pitch}"


# espeak-ng accents and voice variants for training. The held-out variants (m6, f5) are
# not among them, nor the novelty variants (whisper, croak, robots, klatt) whose
# output is not speech-like or does not split into words reliably.
_TRAIN_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f4",
    "Alex", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mario", "Michael", "Mike", "Storm", "Tweaky",
    "adam", "anika", "aunty", "belinda", "benjamin", "caleb", "david", "ed", "edward", "grandma", "grandpa",
    "john", "linda", "max", "paul", "pablo", "quincy", "rob", "robert", "steph", "travis", "victor", "zac",
)  # fmt: skip


def training_voices(n: int, seed: int = 0) -> tuple[VoiceConfig, ...]:
    """``n`` training configurations: variants in turn, each with an accent, a speed
    (135-190 words per minute) and a pitch (30-75) drawn from ``seed``."""
    rng = np.random.default_rng(seed + 7919)
    return tuple(
        VoiceConfig(
            f"{_TRAIN_ACCENTS[i % len(_TRAIN_ACCENTS)]}+{_TRAIN_VARIANTS[i % len(_TRAIN_VARIANTS)]}",
            int(rng.integers(135, 191)),
            int(rng.integers(30, 76)),
        )
        for i in range(n)
    )


HELDOUT_VOICES = (VoiceConfig("en-us+m6", 160, 50), VoiceConfig("en-gb-x-rp+f5", 170, 60))


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    return exe


# ---------------------------------------------------------------------------
# Text


def corpus_sentences(fortune_dir: Path = FORTUNE_DIR) -> list[list[str]]:
    """Sentences (lists of lower-case words) of the fortune files, in file order, without duplicates."""
    if not fortune_dir.is_dir():
        raise RuntimeError(f"{fortune_dir} not found (Debian: apt-get install fortunes)")
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    for name in FORTUNE_FILES:
        path = fortune_dir / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            if re.search(r"\d|--|\t", entry):  # numbers, attributions, tables
                continue
            for sent in re.split(r"[.!?;:]+", entry.replace("\n", " ")):
                words = re.sub(r"[^a-z' ]", " ", sent.lower().replace("-", " ")).split()
                words = [w.strip("'") for w in words if w.strip("'")]
                if 3 <= len(words) <= 12 and tuple(words) not in seen:
                    seen.add(tuple(words))
                    out.append(words)
    return out


def build_vocabulary(sentences: list[list[str]], n_words: int, token_ok) -> list[str]:
    """The ``n_words`` most frequent words (ties by spelling) that ``token_ok`` accepts."""
    counts = Counter(w for s in sentences for w in s)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return [w for w in ranked if token_ok(w)][:n_words]


def split_sentences(sentences: list[list[str]], vocab: list[str], n_heldout: int, seed: int):
    """(train, heldout): the sentences made only of vocabulary words, ``n_heldout`` of them held out."""
    v = set(vocab)
    usable = [s for s in sentences if all(w in v for w in s)]
    order = np.random.default_rng(seed).permutation(len(usable))
    held = [usable[i] for i in order[:n_heldout]]
    train = [usable[i] for i in order[n_heldout:]]
    return train, held


# ---------------------------------------------------------------------------
# Audio


_BREAK_MS = 700  # silence espeak-ng puts between the words of one call
_SPLIT_S = 0.35  # a quiet stretch this long separates words (stop closures are far shorter)


def synth_words(words: list[str], cfg: VoiceConfig) -> list[np.ndarray]:
    """Each word spoken by ``cfg`` in isolation: float32 at 16 kHz, leading and
    trailing silence cut. One espeak-ng call (SSML breaks between the words),
    split at the long silences."""
    import soxr

    brk = f'<break time="{_BREAK_MS}ms"/>'
    ssml = "<speak>" + brk.join(words) + "</speak>"
    wav = subprocess.run(
        [_espeak(), "-m", "-v", cfg.voice, "-s", str(cfg.speed), "-p", str(cfg.pitch), "--stdout", ssml],
        check=True,
        capture_output=True,
    ).stdout
    # RIFF header: the sample rate at byte 24, the samples after "data" + size
    rate = int.from_bytes(wav[24:28], "little")
    data = wav.find(b"data")
    pcm = np.frombuffer(wav[data + 8 :], dtype=np.int16).astype(np.float32) / 32768.0
    pcm = soxr.resample(pcm, rate, SAMPLE_RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(pcm) > _TRIM_THRESHOLD)
    cuts = np.flatnonzero(np.diff(loud) > _SPLIT_S * SAMPLE_RATE)
    firsts = np.concatenate([[loud[0]], loud[cuts + 1]])
    lasts = np.concatenate([loud[cuts], [loud[-1]]])
    if firsts.shape[0] != len(words):
        raise RuntimeError(f"espeak-ng ({cfg.name}): {firsts.shape[0]} sounds for {len(words)} words")
    return [pcm[max(0, a - _TRIM_KEEP) : b + _TRIM_KEEP].copy() for a, b in zip(firsts, lasts, strict=True)]


def make_bank(words: list[str], voices: tuple[VoiceConfig, ...], workers: int = 2) -> dict[str, np.ndarray]:
    """Every word by every voice: ``audio`` int16 [total], ``offsets`` int64 [n_voices, n_words + 1].
    Each voice is scaled to the same peak (training varies the gain itself)."""
    with ThreadPoolExecutor(workers) as pool:
        per_voice = list(pool.map(lambda v: synth_words(words, v), voices))
    lengths = np.array([[c.shape[0] for c in cs] for cs in per_voice], dtype=np.int64)
    flat = np.cumsum(lengths.reshape(-1))
    starts = np.concatenate([[0], flat[:-1]]).reshape(len(voices), len(words))
    offsets = np.zeros((len(voices), len(words) + 1), dtype=np.int64)
    offsets[:, :-1] = starts
    offsets[:, -1] = starts[:, -1] + lengths[:, -1]
    audio = np.empty(int(flat[-1]), dtype=np.int16)
    for v, clips in enumerate(per_voice):
        peak = max(float(np.abs(c).max()) for c in clips)
        voice_audio = np.concatenate(clips) / peak * 0.9 * 32767
        audio[offsets[v, 0] : offsets[v, -1]] = np.round(voice_audio).astype(np.int16)
    return {"audio": audio, "offsets": offsets}


@dataclass
class Utterance:
    text: str
    words: list[str]
    starts: list[float]  # seconds
    ends: list[float]
    voice: str


def assemble(
    clips: list[np.ndarray],
    rng: np.random.Generator,
    lead: tuple[float, float] = (0.1, 0.6),
    gap: tuple[float, float] = (0.04, 0.2),
    tail: float = 0.3,
) -> tuple[np.ndarray, list[float], list[float]]:
    """Concatenate word clips with random silences; returns float32 audio and each word's start/end (s)."""
    pieces: list[np.ndarray] = []
    pos = int(rng.uniform(*lead) * SAMPLE_RATE)
    pieces.append(np.zeros(pos, dtype=np.float32))
    starts, ends = [], []
    for i, c in enumerate(clips):
        if i:
            g = int(rng.uniform(*gap) * SAMPLE_RATE)
            pieces.append(np.zeros(g, dtype=np.float32))
            pos += g
        starts.append(pos / SAMPLE_RATE)
        pieces.append(c.astype(np.float32))
        pos += c.shape[0]
        ends.append(pos / SAMPLE_RATE)
    pieces.append(np.zeros(int(tail * SAMPLE_RATE), dtype=np.float32))
    return np.concatenate(pieces), starts, ends


def write_heldout(out_dir: Path, sentences: list[list[str]], voices: tuple[VoiceConfig, ...], seed: int) -> list[dict]:
    """Held-out utterances as 16 kHz FLAC files plus ``manifest.json`` (text and word timings)."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = []
    for i, words in enumerate(sentences):
        voice = voices[i % len(voices)]
        audio, starts, ends = assemble(synth_words(words, voice), rng)
        name = f"utt{i:03d}.flac"
        sf.write(out_dir / name, np.round(audio * 32767).astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
        manifest.append(
            {
                "file": name,
                **asdict(
                    Utterance(
                        " ".join(words), words, [round(s, 4) for s in starts], [round(e, 4) for e in ends], voice.name
                    )
                ),
            }
        )
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def write_bank_text(
    out: Path,
    words: list[str],
    voices: tuple[VoiceConfig, ...],
    sentences: list[list[str]],
    word_tokens: dict[str, list[int]],
    vocab_size: int,
) -> None:
    """``out/bank.npz`` without the audio: words, voices, training sentences, each word's
    tokens and the vocabulary's token bytes for decoding (``write_bank_audio`` adds the rest)."""
    from .checkpoint import build_tekken

    out.mkdir(parents=True, exist_ok=True)
    pieces = [v["token_bytes"] for v in build_tekken(vocab_size)["vocab"]]
    np.savez(
        out / "bank.npz",
        words=np.array(words),
        voices=np.array([v.name for v in voices]),
        sentences=np.array([" ".join(s) for s in sentences]),
        word_tokens=np.array(json.dumps(word_tokens)),
        pieces=np.array(json.dumps(pieces)),
    )


def parse_voice(name: str) -> VoiceConfig:
    """The inverse of ``VoiceConfig.name`` ("en-us+m3/s150/p40")."""
    m = re.fullmatch(r"(.+)/s(\d+)/p(\d+)", name)
    if m is None:
        raise ValueError(f"not a voice configuration name: {name!r}")
    return VoiceConfig(m[1], int(m[2]), int(m[3]))


def write_bank_audio(out: Path, workers: int = 2, raw: bool = False) -> None:
    """Speak every word of ``out/bank.npz`` in every voice it names and store it:
    ``out/bank.ogg`` (Ogg Vorbis, ~1/6 of 16-bit PCM, for carrying) or with ``raw``
    ``out/bank.npy`` (int16, fast to write and memory-mapped by the trainer);
    the offsets go into ``bank.npz``."""
    import soundfile as sf

    with np.load(out / "bank.npz") as z:  # the text fields (a previous run's offsets are replaced)
        fields = {k: z[k] for k in z.files if k not in ("offsets", "samples")}
    bank = make_bank([str(w) for w in fields["words"]], tuple(parse_voice(str(v)) for v in fields["voices"]), workers)
    audio = bank["audio"]
    if raw:
        np.save(out / "bank.npy", audio)
    else:
        with sf.SoundFile(out / "bank.ogg", "w", SAMPLE_RATE, 1, format="OGG", subtype="VORBIS") as f:
            for i in range(0, audio.shape[0], SAMPLE_RATE * 10):  # libsndfile's Vorbis writer fails on huge blocks
                f.write(audio[i : i + SAMPLE_RATE * 10])
    np.savez(out / "bank.npz", **fields, offsets=bank["offsets"], samples=np.int64(audio.shape[0]))
    print(
        f"bank: {fields['words'].shape[0]} words x {fields['voices'].shape[0]} voices, "
        f"{audio.shape[0] / SAMPLE_RATE:.0f} s",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    from .train import tekken_word_tokens

    ap = argparse.ArgumentParser(prog="python -m voxtral.testing.speech", description=__doc__.split("\n")[0])
    ap.add_argument(
        "what",
        choices=["bank", "heldout", "audio"],
        help="bank: text and audio of the training word bank (--text-only: the text); "
        "audio: the audio of a text-only bank (needs espeak-ng only); heldout: the held-out set",
    )
    ap.add_argument("out", type=Path)
    ap.add_argument("--words", type=int, default=1000, help="vocabulary size (words)")
    ap.add_argument("--vocab-size", type=int, default=32768, help="model vocabulary (token ids) the words must fit")
    ap.add_argument("--heldout", type=int, default=40, help="held-out sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--voices", type=int, default=64, help="training voice configurations in the bank")
    ap.add_argument("--text-only", action="store_true", help="bank: write bank.npz without the audio")
    ap.add_argument("--raw", action="store_true", help="audio as int16 bank.npy instead of Ogg Vorbis")
    a = ap.parse_args(argv)
    if a.what == "audio":
        write_bank_audio(a.out, a.workers, a.raw)
        return 0
    tok = tekken_word_tokens(a.vocab_size)
    sentences = corpus_sentences()
    vocab = build_vocabulary(sentences, a.words, lambda w: tok(w) is not None)
    train, held = split_sentences(sentences, vocab, a.heldout, a.seed)
    print(
        f"{len(sentences)} corpus sentences, vocabulary {len(vocab)} words, "
        f"{len(train)} training and {len(held)} held-out sentences",
        file=sys.stderr,
    )
    if a.what == "heldout":
        write_heldout(a.out, held, HELDOUT_VOICES, a.seed)
        return 0
    write_bank_text(a.out, vocab, training_voices(a.voices, a.seed), train, {w: tok(w) for w in vocab}, a.vocab_size)
    if not a.text_only:
        write_bank_audio(a.out, a.workers, a.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
