"""OpenMP threads spin briefly before they sleep (omp_waits.py): set before
the kernels' OpenMP runtime loads, and never over the user's own choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from voxtral.omp_waits import SHORT_SPINCOUNT, short_openmp_spins

# In a fresh process: is libgomp mapped after `import voxtral` alone, and after the kernels?
PROBE = """
import json, os
def gomp_loaded():
    with open("/proc/self/maps") as f:
        return "libgomp" in f.read()
import voxtral
before = gomp_loaded()
spincount = os.environ.get("GOMP_SPINCOUNT")
from voxtral import _kernels
print(json.dumps({"before": before, "after": gomp_loaded(), "spincount": spincount}))
"""


def _probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    run = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps (Linux)")
def test_short_spins_are_set_before_libgomp_loads():
    result = _probe()
    if not result["after"]:
        pytest.skip("the kernels are not built with GNU libgomp here")
    assert result["before"] is False  # the variable is in place when libgomp reads it
    assert result["spincount"] == SHORT_SPINCOUNT


@pytest.mark.parametrize(
    ("user", "expected"),
    [({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "active"}, None), ({"OMP_WAIT_POLICY": "passive"}, None)],
)
def test_the_users_wait_setting_wins(user, expected):
    assert _probe(**user)["spincount"] == expected


def test_short_openmp_spins_on_a_mapping():
    env: dict[str, str] = {}
    assert short_openmp_spins(env) == SHORT_SPINCOUNT and env == {"GOMP_SPINCOUNT": SHORT_SPINCOUNT}
    mine = {"GOMP_SPINCOUNT": "20000000"}
    assert short_openmp_spins(mine) is None and mine == {"GOMP_SPINCOUNT": "20000000"}
