"""The live real-time monitor: silent while the engine keeps up, one warning
with the measured factor when it falls behind, and a suggested format whose
estimated factor keeps up (estimates scale with weight bytes)."""

from __future__ import annotations

import json

import pytest

from voxtral.config import from_params_json
from voxtral.pace import PREFERENCE, RealTimeMonitor, weight_bytes


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """The real model's dimensions (only the config: no weights needed)."""
    from voxtral.testing.checkpoint import params_json, resolve_dims

    path = tmp_path_factory.mktemp("full-config") / "params.json"
    path.write_text(json.dumps(params_json(resolve_dims("full"))))
    return from_params_json(path)


def test_weight_bytes_follow_bits_per_weight(cfg):
    bf16, q8, q4 = (weight_bytes(cfg, f) for f in ("bf16", "q8_0", "q4_0"))
    assert bf16 > q8 > q4 > 0
    assert weight_bytes(cfg, "q4_k") == q4  # same 4.5 bits per weight


def test_silent_while_keeping_up(cfg):
    mon = RealTimeMonitor(cfg, "bf16")
    for _ in range(200):
        assert mon.update(0.08, 0.07) is None
    assert not mon.warned and mon.rtf() == pytest.approx(0.875)


def test_no_verdict_before_a_full_window(cfg):
    mon = RealTimeMonitor(cfg, "bf16", window_seconds=4.0)
    for _ in range(49):  # 3.92 s of audio, all of it slow
        assert mon.update(0.08, 0.4) is None


def test_warns_once_with_factor_and_a_format_that_keeps_up(cfg):
    mon = RealTimeMonitor(cfg, "bf16")
    messages = [m for _ in range(200) if (m := mon.update(0.08, 0.16)) is not None]
    assert len(messages) == 1
    msg = messages[0]
    assert "real-time factor 2.00" in msg and "bf16" in msg
    suggested = next(f for f in PREFERENCE if f"--quant {f} " in msg)
    ratio = weight_bytes(cfg, suggested) / weight_bytes(cfg, "bf16")
    assert 2.0 * ratio <= 0.8
    # nothing more exact than the suggestion would have kept up
    for f in PREFERENCE[: PREFERENCE.index(suggested)]:
        assert 2.0 * weight_bytes(cfg, f) / weight_bytes(cfg, "bf16") > 0.8


def test_says_when_nothing_keeps_up(cfg):
    mon = RealTimeMonitor(cfg, "q4_0")
    msg = next(m for _ in range(100) if (m := mon.update(0.08, 0.4)) is not None)
    assert "no weight format is expected to keep up" in msg
