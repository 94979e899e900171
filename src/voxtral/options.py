"""The options of one transcription, checked once, where they enter (``load``,
``model.stream``, ``transcribe``, the CLI, a server session): everything
past this point takes them as valid. numpy-free, so that the CLI checks its
arguments before anything heavy loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import DEFAULT_DELAY_MS, DELAY_STEP_MS, MAX_DELAY_MS, MIN_DELAY_MS
from .errors import UsageError
from .modes import KV_DTYPES

# Decoder steps verified in one pass (drafted verification, see stream.py).
# 8: on the trained model's held-out speech (bench/bench_drafts.py) passes
# per audio second fall 15.4 -> 3.55 against 1, for 1.36 rows per step; 16
# saves 8% more passes for 9% more rows (not free on 2 cores at full size);
# not yet tuned on the full-size model.
DEFAULT_DRAFT_STEPS = 8
MAX_DRAFT_STEPS = 64
# Draft sources (drafts.py), in the order they extend a draft. energy,pad at
# K = 8 on the trained model (bench/bench_drafts.py, held-out speech, BF16 and
# q4_0; shared recordings): no more passes than pad alone and the same rows
# within 1% (3.55 vs 3.56 passes per audio second, 1.36 vs 1.37 rows per step
# on held-out speech; 2.19 vs 2.21 and 1.13 vs 1.12 on the recordings), its
# own cost < 1 ms per audio second. word: no gain there (the trained model's words are
# mostly one token; rejected word drafts cut the pads behind them).
DRAFT_SOURCES = ("word", "energy", "pad")
DEFAULT_DRAFTS = "energy,pad"


def _whole(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Options:
    """``delay_ms``: transcription delay (80..2400 ms, whole decoder steps);
    ``kv_cache``: decoder/encoder KV cache storage ("f32" exact, "bf16", "int8");
    ``sample_rate``: the rate of the samples fed (None: the model's);
    ``draft_steps``: decoder steps verified per pass when audio is waiting
    (1 = step by step; any value gives the same tokens);
    ``drafts``: the draft sources, comma-separated, in the order they extend
    a draft (any of DRAFT_SOURCES; the tokens are the same for any choice);
    ``keep_logits``: keep every step's logits (tests)."""

    delay_ms: int = DEFAULT_DELAY_MS
    kv_cache: str = "f32"
    sample_rate: int | None = None
    draft_steps: int = DEFAULT_DRAFT_STEPS
    drafts: str = DEFAULT_DRAFTS
    keep_logits: bool = False

    def __post_init__(self) -> None:
        delay = self.delay_ms
        if not isinstance(delay, (int, float)) or isinstance(delay, bool):
            raise UsageError(f"delay must be a number of milliseconds, got {delay!r}")
        if not MIN_DELAY_MS <= delay <= MAX_DELAY_MS:
            raise UsageError(f"delay {delay} ms is outside the model's range {MIN_DELAY_MS}..{MAX_DELAY_MS} ms")
        if delay % DELAY_STEP_MS:
            raise UsageError(f"delay {delay} ms is not a multiple of {DELAY_STEP_MS} ms")
        if not isinstance(self.kv_cache, str) or self.kv_cache not in KV_DTYPES:
            raise UsageError(f"kv_cache must be one of {', '.join(KV_DTYPES)}; got {self.kv_cache!r}")
        if self.sample_rate is not None:
            from .audio import check_sample_rate  # numpy: not needed by the CLI's argument checks

            object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate, "sample_rate"))
        if not 1 <= _whole(self.draft_steps, "draft_steps") <= MAX_DRAFT_STEPS:
            raise UsageError(f"draft_steps must be 1..{MAX_DRAFT_STEPS}, got {self.draft_steps}")
        names = self.drafts.split(",") if isinstance(self.drafts, str) else None
        if not names or any(n not in DRAFT_SOURCES for n in names) or len(set(names)) != len(names):
            raise UsageError(
                f"drafts must be distinct names of {', '.join(DRAFT_SOURCES)}, comma-separated; got {self.drafts!r}"
            )

    def replace(self, **changes) -> Options:
        """A copy with some options changed (checked again)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self


def add_draft_arguments(parser, *, shown_by: str) -> None:
    """``--draft-steps`` and ``--drafts`` (None: the default), as the CLI and
    ``serve`` both take them; ``shown_by`` names where each source's acceptance
    is reported."""
    parser.add_argument(
        "--draft-steps",
        type=int,
        default=None,
        metavar="K",
        help=f"decoder steps verified in one pass when audio is waiting, 1..{MAX_DRAFT_STEPS} "
        f"(default {DEFAULT_DRAFT_STEPS}; the tokens are the same for any K, only the speed changes)",
    )
    parser.add_argument(
        "--drafts",
        default=None,
        metavar="SOURCES",
        help=f"draft sources of those steps, comma-separated, in order: {', '.join(DRAFT_SOURCES)} "
        f"(default {DEFAULT_DRAFTS}; the tokens are the same for any choice; {shown_by} shows each one's acceptance)",
    )
