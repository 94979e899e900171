"""How many CPU threads the kernels may use, checked before they are started.

More threads than cores only adds contention (decoding is memory-bound), and
a huge count made OpenMP fail to create threads: requests are capped at a few
per logical CPU, and a number beyond ``MAX_THREADS`` is refused as a mistake.
numpy-free, so the CLI can check ``--threads`` before loading anything.
"""

from __future__ import annotations

import numbers
import os

from .errors import UsageError

MAX_THREADS = 1024  # no machine this runs on has more; the C side clamps here too
_PER_CPU = 4  # more than this per logical CPU is pure oversubscription


def thread_cap() -> int:
    """The most threads worth using on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(MAX_THREADS, _PER_CPU * max(1, cpus))


def check_num_threads(n, what: str = "num_threads") -> int:
    """The thread count to use for a request of ``n``: an integer 1..MAX_THREADS
    (else :class:`UsageError`), capped at :func:`thread_cap`."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise UsageError(f"{what} must be a whole number of threads, got {n!r}")
    if not 1 <= n <= MAX_THREADS:
        raise UsageError(f"{what} must be between 1 and {MAX_THREADS}, got {n}")
    return min(int(n), thread_cap())
