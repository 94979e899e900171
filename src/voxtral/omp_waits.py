"""How long idle OpenMP threads spin before they sleep, set before the
kernels' OpenMP runtime starts.

GNU libgomp's default is to spin for about 300,000 iterations at every
barrier. That is fine when the process has the cores to itself. When another
busy process shares them (a second transcription, a test run, the browser),
spinning threads burn the time slices their partners need. A decoder step
crosses hundreds of barriers, so it then runs at a fraction of its fair
share: 2 processes on 2 cores were 2x slower per step than with short spins,
and 3 processes 7-18x (``bench/bench_contention.py``: full-size Q4_0 live
steps, 2 cores). 1,000 iterations kept them within 1.14x of a fair share and
cost nothing measurable alone (157 against 154 ms); 300 cost 7% alone.

libgomp reads ``GOMP_SPINCOUNT`` once, when it is loaded, so this must run
before ``voxtral._kernels`` is imported. A user's own ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` wins (``GOMP_SPINCOUNT=300000`` restores libgomp's default).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SHORT_SPINCOUNT = "1000"  # iterations of a pause loop


def short_openmp_spins(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``GOMP_SPINCOUNT`` in ``environ`` unless the user chose a wait
    policy; returns the value set, or None when the user's choice stands."""
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return None
    environ["GOMP_SPINCOUNT"] = SHORT_SPINCOUNT
    return SHORT_SPINCOUNT
