"""Draft sources of drafted verification (see stream.py): guesses of the
tokens a stream's next decoder steps will emit, verified in one pass.

A guess costs one decoder row and is kept only where greedy decoding agrees,
so a draft never changes the tokens, only the rows computed per step. Each
source extends the draft that the sources before it made, and accounts its
own rows (``DraftStats``):

- ``word``: after the first token of a word, the rest of the word as this
  stream emitted it before (prompt lookup over the stream's own tokens);
- ``energy``: STREAMING_PAD for each step whose audio is silent or holds no
  word onset (the audio a step's token describes is known before the pass:
  the model emits a word's token ``delay`` after its audio, so the blocks
  that matter are read from the samples already pushed);
- ``pad``: STREAMING_PAD for a window that adapts to what was accepted
  (most steps of speech emit a pad too).

``Options.drafts`` names the sources in order (e.g. "word,energy,pad").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# energy: the token of slot s (the 80 ms block its position describes) is
# drafted as a pad when the audio around it is silent (blocks s, s+1 below
# QUIET_DB, dBFS of mean power) or holds no onset (no block of s-1..s+2
# louder than one two blocks before it by ONSET_DB). Measured on the
# trained model's held-out speech (utt000-019; bench_drafts.py --energy):
# no non-pad token of 1117 (delays 160/480/960 ms) is in audio below -35 dBFS
# at s..s+1 (block s alone: 23 are), and none of 147 lacks a 3 dB rise; the
# rules cover 42% + 29% of the pads. A wrong guess costs rows, never tokens.
QUIET_DB = -40.0
ONSET_DB = 3.0
FLOOR_DB = -80.0  # digital silence is no quieter than this
# pad: at most this many guessed pads per step, whatever draft_steps allows
# (the energy source's sure pads are not limited): on the trained model, pad
# guesses past 8 cost ~0.3-0.5 rows per step for a few % fewer passes.
PAD_WINDOW_MAX = 8


@dataclass
class DraftStats:
    """One source's drafts: ``drafted`` rows, ``accepted`` rows (greedy
    agreed), ``proposals`` (steps it drafted in)."""

    drafted: int = 0
    accepted: int = 0
    proposals: int = 0

    @property
    def wasted(self) -> int:
        """Rows computed and thrown away."""
        return self.drafted - self.accepted

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def add(self, other: DraftStats) -> None:
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.proposals += other.proposals


def count_drafts(stats: dict[str, DraftStats], sources: Sequence[str], accepted: int) -> None:
    """Account one verified draft: ``sources`` names the source of each drafted
    token, the first ``accepted`` of them held."""
    seen = set()
    for i, name in enumerate(sources):
        s = stats.setdefault(name, DraftStats())
        s.drafted += 1
        s.accepted += i < accepted
        if name not in seen:
            seen.add(name)
            s.proposals += 1


@dataclass
class Draft:
    """Drafted tokens and the source of each."""

    tokens: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


class DraftSource:
    """One source. ``extend(position, n, draft, history)``: tokens to append to
    ``draft`` (the drafts of the sources before it, of the tokens from
    ``position``), at most ``n``; ``history``: the tokens the stream emitted.
    ``audio(samples)``: every sample the stream decodes (its padding too), in
    order; ``update(draft, accepted)``: the whole draft of the last step (all
    sources) and how many of its tokens held."""

    name = "source"

    def extend(self, position: int, n: int, draft: list[int], history: Sequence[int]) -> list[int]:
        return []

    def audio(self, samples: np.ndarray) -> None:
        pass

    def update(self, draft: Draft, accepted: int) -> None:
        pass


# A source none of whose rows held in REST_AFTER drafts in a row rests (drafts
# nothing) for 2, 4, 8 .. REST_MAX of its turns, doubling with each further
# miss, then tries again: where it does not fit the model at all (random
# weights emit no pads) it costs a row every REST_MAX steps, not every step
# (full-size random Q4_0, live: the wasted row per step made chunks 5-17%
# slower than no drafts; after 2 misses the trained model's held-out speech
# lost passes (3.50 -> 3.75 per s), after 3 it is unchanged).
REST_AFTER = 3
REST_MAX = 16


class _Window:
    """An adaptive draft length: after a step in which ``a`` drafts (of the
    whole draft) held, at most ``2a + 1`` in all next time. A source that is
    wrong for this model or audio costs one row per step, not its whole run,
    and after REST_AFTER misses in a row fewer (see REST_MAX)."""

    def __init__(self):
        self.size: int | None = None  # None: no limit yet
        self.misses = 0  # drafts in a row of which none of its rows held
        self.rest = 0  # turns left in which it drafts nothing

    def room(self, n: int, drafted: int) -> int:
        if self.rest:
            self.rest -= 1
            return 0
        return n if self.size is None else max(0, min(n, self.size - drafted))

    def update(self, mine: bool, draft: Draft, accepted: int) -> None:
        if mine or accepted < len(draft.tokens):
            self.size = 2 * accepted + 1

    def score(self, name: str, draft: Draft, accepted: int) -> None:
        """Count a miss (none of ``name``'s rows of the draft held) or a hit."""
        if name not in draft.sources:
            return
        if draft.sources.index(name) < accepted:  # its rows are one run: the first held
            self.misses = 0
            return
        self.misses += 1
        if self.misses >= REST_AFTER:
            self.rest = min(REST_MAX, 2 ** (self.misses - REST_AFTER + 1))


class PadDrafts(DraftSource):
    """STREAMING_PAD for the next steps. The window adapts: after a pass in
    which ``a`` drafts were accepted the whole draft (with the other sources'
    part) is at most ``2a + 1`` long, so a run of text costs few wasted rows."""

    name = "pad"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.window = _Window()

    def extend(self, position: int, n: int, draft: list[int], history: Sequence[int]) -> list[int]:
        return [self.pad_id] * self.window.room(min(n, PAD_WINDOW_MAX), len(draft))

    def update(self, draft: Draft, accepted: int) -> None:
        self.window.update(self.name in draft.sources, draft, accepted)
        self.window.score(self.name, draft, accepted)


class EnergyDrafts(DraftSource):
    """STREAMING_PAD for each next step whose audio says pad (see QUIET_DB,
    ONSET_DB); stops at the first step that may start a word. Where the rule
    does not fit (random weights, another model's habits) its drafts are
    rejected and its window shrinks as the pad source's does.
    ``first_position``: the decoder position of the first sample pushed
    (after the left padding); ``samples_per_token``: one block per position;
    ``n_delay``: the delay in tokens (the token at position p describes the
    block of position p - 1 - n_delay)."""

    name = "energy"

    def __init__(self, pad_id: int, first_position: int, samples_per_token: int, n_delay: int):
        self.pad_id = pad_id
        self.spt = samples_per_token
        self.offset = first_position + 1 + n_delay  # token position - block index
        self._tail = np.zeros(0, dtype=np.float32)  # samples of a block not yet complete
        self._db: list[float] = []  # per block pushed
        self._base = 0  # block index of _db[0]
        self.window = _Window()

    def audio(self, samples: np.ndarray) -> None:
        x = np.concatenate([self._tail, samples]) if self._tail.shape[0] else samples
        n = x.shape[0] // self.spt
        if n:
            power = np.mean(np.square(x[: n * self.spt].reshape(n, self.spt), dtype=np.float64), axis=1)
            self._db += np.maximum(FLOOR_DB, 10 * np.log10(power + 1e-30)).tolist()
        self._tail = x[n * self.spt :].astype(np.float32, copy=True)

    def _level(self, block: int) -> float | None:
        """dBFS of a block; blocks before the audio are the left padding (silent); None: not pushed yet."""
        i = block - self._base
        if i >= len(self._db):
            return None
        return FLOOR_DB if block < 0 else self._db[i]

    def pad(self, position: int) -> bool:
        """The audio says the token at ``position`` is a pad (False where not known yet)."""
        s = position - self.offset
        db = [self._level(s + i) for i in range(-2, 3)]  # blocks s-2 .. s+2
        if db[2] is not None and db[3] is not None and max(db[2], db[3]) < QUIET_DB:
            return True
        if db[4] is None:
            return False
        rise = max(db[3] - db[1], db[2] - db[0], db[4] - db[2])  # type: ignore[operator]
        return rise < ONSET_DB

    def extend(self, position: int, n: int, draft: list[int], history: Sequence[int]) -> list[int]:
        start = position + len(draft)
        self._forget(start)
        n = self.window.room(n, len(draft))
        out = 0
        while out < n and self.pad(start + out):
            out += 1
        return [self.pad_id] * out

    def update(self, draft: Draft, accepted: int) -> None:
        # only its own rejections shrink it (the pads guessed after its run are another source's)
        if accepted < len(draft.tokens) and draft.sources[accepted] == self.name:
            self.window.size = 2 * accepted + 1
        elif self.name in draft.sources:
            self.window.size = None
        self.window.score(self.name, draft, accepted)

    def _forget(self, position: int) -> None:
        """Drop blocks no later step looks at (long streams stay small)."""
        drop = position - self.offset - 2 - self._base - 64
        if drop > 256:
            del self._db[:drop]
            self._base += drop


class WordDrafts(DraftSource):
    """After the first token(s) of a word, the rest of the word as this stream
    emitted it the last time (a word: tokens at consecutive steps between
    pads). Drafts nothing elsewhere."""

    name = "word"

    def __init__(self, pad_id: int, is_control):
        self.pad_id = pad_id
        self.is_control = is_control
        self._seen = 0  # history tokens looked at
        self._run: list[int] = []  # the word being emitted
        self._next: dict[tuple[int, ...], list[int]] = {}  # word prefix -> the rest, last seen

    def _learn(self, history: Sequence[int]) -> None:
        for t in history[self._seen :]:
            if t == self.pad_id or self.is_control(t):
                for i in range(1, len(self._run)):
                    self._next[tuple(self._run[:i])] = self._run[i:]
                self._run = []
            else:
                self._run.append(t)
        self._seen = len(history)

    def extend(self, position: int, n: int, draft: list[int], history: Sequence[int]) -> list[int]:
        self._learn(history)
        if draft or not self._run:
            return []
        return self._next.get(tuple(self._run), [])[:n]


class Drafter:
    """The sources of one stream, in order: ``propose()`` lets each extend the
    draft, ``update()`` tells each how its part fared; ``stats`` by source."""

    def __init__(self, sources: list[DraftSource]):
        self.sources = sources
        self.stats: dict[str, DraftStats] = {s.name: DraftStats() for s in sources}
        self._last: Draft | None = None

    def audio(self, samples: np.ndarray) -> None:
        for s in self.sources:
            s.audio(samples)

    def propose(self, position: int, n: int, history: Sequence[int]) -> Draft:
        draft = Draft()
        for s in self.sources:
            if len(draft.tokens) >= n:
                break
            got = s.extend(position, n - len(draft.tokens), draft.tokens, history)
            draft.tokens += got
            draft.sources += [s.name] * len(got)
        self._last = draft
        return draft

    def update(self, drafted: int, accepted: int) -> None:
        """The last proposal's first ``drafted`` tokens were verified and the
        first ``accepted`` of them held."""
        last = self._last or Draft()
        draft = Draft(last.tokens[:drafted], last.sources[:drafted])
        count_drafts(self.stats, draft.sources, accepted)
        for s in self.sources:
            s.update(draft, accepted)
        self._last = None
