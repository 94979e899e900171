"""CPU that ``--mic --vad`` saves on a recording that is half silence.

    python bench/vad_cpu.py MODEL_DIR [--rounds 2]

Builds a 50 %-silent signal from the recordings in ../shared/data/audio
(speech turns separated by seconds of silence), then feeds it in 80 ms chunks
as the microphone loop does, alternately (A/B, ``--rounds`` times) to a plain
stream and to a ``SpeechGate`` in front of one, and prints the process CPU
seconds (all threads) per second of audio for each, and the detector's own
share. The model's cost per decoded second scales with its layers; the
detector's does not, so a random-weight checkpoint with fewer layers
understates the saving.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import voxtral
from voxtral.audio import load_audio
from voxtral.live_vad import SpeechGate
from voxtral.vad import VoiceActivityDetector

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audio"
SR = 16000


def half_silent() -> np.ndarray:
    speech = [load_audio(AUDIO / "night1968_5s_dont_worry_about_him.wav"), load_audio(AUDIO / "jfk.wav")]
    pieces = []
    for s in speech:
        pieces += [s, np.zeros(s.shape[0], dtype=np.float32)]  # as much silence as speech after each turn
    return np.concatenate(pieces)


def cpu_of(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def run_plain(model, x: np.ndarray, chunk: int) -> None:
    s = model.stream()
    for i in range(0, x.shape[0], chunk):
        s.feed(x[i : i + chunk])
    s.finish()


def run_gate(model, x: np.ndarray, chunk: int) -> SpeechGate:
    g = SpeechGate(model.stream())
    for i in range(0, x.shape[0], chunk):
        g.feed(x[i : i + chunk])
    g.finish()
    return g


def run_vad_only(x: np.ndarray, chunk: int) -> None:
    v = VoiceActivityDetector()
    for i in range(0, x.shape[0], chunk):
        v.feed(x[i : i + chunk])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    model = voxtral.load(args.model, download=False)
    x = half_silent()
    chunk = model.config.audio.samples_per_token  # 80 ms
    seconds = x.shape[0] / SR
    gate = run_gate(model, x, chunk)  # warm-up, and how much was decoded
    plain, gated, vad = [], [], []
    for _ in range(args.rounds):  # alternate, so that the machine's load hits both alike
        plain.append(cpu_of(lambda: run_plain(model, x, chunk)) / seconds)
        gated.append(cpu_of(lambda: run_gate(model, x, chunk)) / seconds)
        vad.append(cpu_of(lambda: run_vad_only(x, chunk)) / seconds)
    a, b, v = min(plain), min(gated), min(vad)
    print(
        f"audio {seconds:.1f} s, speech decoded with --vad {gate.decoded_samples / SR:.1f} s "
        f"({100 * gate.decoded_samples / x.shape[0]:.0f} %)"
    )
    print(
        f"CPU s per audio s: plain {a:.3f}, --vad {b:.3f} (of which the detector {v:.3f}); "
        f"saved {100 * (1 - b / a):.0f} % (best of {args.rounds} alternating rounds)"
    )


if __name__ == "__main__":
    main()
