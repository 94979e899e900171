"""Helpers for live-speed benchmarks: a synthetic real-time clock, per-stage
timers, and a fast-forward of the decoder KV cache to a long context.

Fast-forward: the attention cost of a step depends on how many cached rows
it reads, not on their values, so a full 8192-position window is reached by
repeating the rows the stream already computed (instead of decoding 11
minutes of audio first). Positions move on by the same amount, so RoPE and
the window masks see the positions of a stream that long.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


def _row_arrays(cache) -> list[np.ndarray]:
    """Every per-layer array of the cache whose rows are positions."""
    arrays = []
    for value in vars(cache).values():
        if isinstance(value, list) and value and all(isinstance(a, np.ndarray) for a in value):
            arrays += [a for a in value if a.shape[:1] == (cache.capacity,)]
    return arrays


def fill_cache(cache, rows: int) -> int:
    """Grow ``cache`` to ``rows`` valid rows by repeating the rows it holds;
    returns how many positions were added (the caller shifts its own
    position bookkeeping by as much)."""
    have = cache.length
    if have == 0:
        raise ValueError("fill_cache needs at least one computed row to repeat")
    rows = min(rows, cache.window - 1)
    added = rows - have
    if added <= 0:
        return 0
    cache.reserve(added)  # room for the rows (nothing is dropped: rows < window)
    for arr in _row_arrays(cache):
        reps = -(-added // have)
        arr[have:rows] = np.concatenate([arr[:have]] * reps)[:added]
    cache.length = rows
    return added


def fast_forward(stream, rows: int) -> int:
    """Make a live stream's decoder context ``rows`` positions long (see module doc)."""
    return stream.fast_forward(lambda cache: fill_cache(cache, rows))


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt
        self.calls[name] = self.calls.get(name, 0) + 1


@contextmanager
def timed(targets: list[tuple[object, str, str]]):
    """Wrap ``getattr(obj, attr)`` for each (obj, attr, stage name) with a
    timer; yields the StageTimes; restores the originals on exit. Nested
    stages are inclusive (attention time is also inside the decoder's)."""
    times = StageTimes()
    saved = []
    for obj, attr, name in targets:
        original = getattr(obj, attr)

        def wrapper(*args, _f=original, _n=name, **kwargs):
            t = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                times.add(_n, time.perf_counter() - t)

        saved.append((obj, attr, original))
        setattr(obj, attr, wrapper)
    try:
        yield times
    finally:
        for obj, attr, original in reversed(saved):
            setattr(obj, attr, original)


@dataclass
class LiveRun:
    compute: list[float]  # seconds of work per feed (one or more chunks)
    latency: list[float]  # per chunk: chunk complete -> its tokens out, on the real-time clock
    chunk_seconds: float
    chunks: int

    @property
    def rtf(self) -> float:
        return float(np.sum(self.compute) / (self.chunks * self.chunk_seconds))

    def percentiles(self) -> dict[str, float]:
        lat = np.array(self.latency) * 1000
        return {
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "max_ms": float(lat.max()),
        }


def paced_feed(stream, audio: np.ndarray, chunk: int, rate: int) -> LiveRun:
    """Feed ``audio`` in chunks that arrive at real time (chunk i is complete
    at (i+1) * chunk / rate s). The clock is synthetic: no sleeping; work
    starts when a chunk has arrived and the previous work is done, and takes
    every chunk that has arrived by then (as the microphone loop does), so a
    slow engine builds a backlog exactly as it would live, and drafted
    verification covers that backlog in fewer decoder passes."""
    compute, latency = [], []
    done = 0.0
    n = (len(audio) - chunk) // chunk + 1 if len(audio) >= chunk else 0
    i = 0
    while i < n:
        now = max(done, (i + 1) * chunk / rate)
        j = i + 1
        while j < n and (j + 1) * chunk / rate <= now:
            j += 1
        t = time.perf_counter()
        stream.feed(audio[i * chunk : j * chunk])
        dt = time.perf_counter() - t
        done = now + dt
        compute.append(dt)
        latency += [done - (k + 1) * chunk / rate for k in range(i, j)]
        i = j
    return LiveRun(compute, latency, chunk / rate, n)
