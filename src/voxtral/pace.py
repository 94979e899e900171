"""Is live transcription keeping up? A real-time-factor monitor for live input.

Live use must do a token's work (mel frames, 4 encoder frames, one decoder
step) in the 80 ms of audio that token stands for. The monitor measures the
real-time factor (compute seconds per audio second) over the last few
seconds and, the first time it stays above 1, produces one message with the
measured figure and the weight format that should keep up on this machine.

That suggestion is an estimate: each step streams its weights from memory,
so its time scales with the bytes of weights read. The estimate scales the
measured factor by the ratio of the formats' weight sizes (from the config).
"""

from __future__ import annotations

import collections
import re

from .config import ModelConfig


def _bits_per_weight(fmt: str) -> float:
    """bf16 or a GGML block type (from the kernel table: scales included)."""
    from .qformats import bits_per_weight

    return 16.0 if fmt == "bf16" else bits_per_weight(fmt)


# the formats in order of preference (most exact first)
PREFERENCE = ("bf16", "q8_0", "q4_k", "q4_0")
_QUANTIZED = re.compile(r"^(enc|dec)\.\d+\.(wq|wk|wv|wo|w1|w2|w3)$|^adapter[12]$")


def weight_bytes(cfg: ModelConfig, fmt: str) -> float:
    """Bytes of the matrices that a token's work reads, in format ``fmt``
    (quantized formats keep the embedding / LM head at 8 bits)."""
    from .weights import expected_shapes

    total = 0.0
    for key, shape in expected_shapes(cfg).items():
        if len(shape) != 2:
            continue
        n = shape[0] * shape[1]
        if _QUANTIZED.match(key):
            bits = _bits_per_weight(fmt)
        elif key == "tok_embeddings":
            bits = _bits_per_weight("bf16" if fmt == "bf16" else "q8_0")
        else:
            bits = 16.0
        total += n * bits / 8
    return total


class RealTimeMonitor:
    def __init__(self, cfg: ModelConfig, fmt: str, window_seconds: float = 4.0, threshold: float = 1.0):
        self.cfg = cfg
        self.fmt = fmt
        self.window_seconds = window_seconds
        self.threshold = threshold
        self._recent: collections.deque[tuple[float, float]] = collections.deque()  # (audio s, compute s)
        self.warned = False

    def rtf(self) -> float:
        audio = sum(a for a, _ in self._recent)
        return sum(c for _, c in self._recent) / audio if audio > 0 else 0.0

    def update(self, audio_seconds: float, compute_seconds: float) -> str | None:
        """Record one piece of work; returns the warning the first time the
        measured factor over a full window exceeds the threshold."""
        self._recent.append((audio_seconds, compute_seconds))
        while sum(a for a, _ in self._recent) - self._recent[0][0] >= self.window_seconds:
            self._recent.popleft()
        if self.warned or sum(a for a, _ in self._recent) < self.window_seconds:
            return None
        rtf = self.rtf()
        if rtf <= self.threshold:
            return None
        self.warned = True
        return f"falling behind real time: real-time factor {rtf:.2f} with {self.fmt} weights. " + self.suggestion(rtf)

    def suggestion(self, rtf: float) -> str:
        here = weight_bytes(self.cfg, self.fmt)
        for fmt in PREFERENCE:
            estimate = rtf * weight_bytes(self.cfg, fmt) / here
            if fmt != self.fmt and estimate <= 0.8 * self.threshold:  # keep a margin for the rest of the machine
                flag = "" if fmt == "bf16" else f"--quant {fmt} "
                return f"{flag}should keep up on this machine (estimated factor {estimate:.2f})."
        best = min(PREFERENCE, key=lambda f: weight_bytes(self.cfg, f))
        estimate = rtf * weight_bytes(self.cfg, best) / here
        return (
            f"no weight format is expected to keep up here (--quant {best}: estimated factor {estimate:.2f}); "
            "a longer --delay-ms does not help, fewer other programs or more cores do."
        )
