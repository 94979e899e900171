"""Server counters in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import threading
from collections import Counter

from ..drafts import DraftStats


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.sessions_active = 0
        self.sessions_total = 0
        self.audio_seconds_in = 0.0
        self.audio_seconds_decoded = 0.0
        self.tokens_out = 0
        self.decoder_steps = 0
        self.batch_rows = 0
        self.stream_passes = 0  # of finished transcriptions: decoder passes each took part in...
        self.stream_steps = 0  # ... and the steps (tokens) they decoded
        self.drafts: dict[str, DraftStats] = {}  # of finished transcriptions, by draft source
        self.compute_seconds = 0.0
        self.dropped_audio_seconds = 0.0
        self.lag_events = 0
        self.backlog_seconds_max = 0.0
        self.errors: Counter[str] = Counter()
        self.http_requests: Counter[tuple[str, int]] = Counter()

    def add(self, **amounts) -> None:
        with self._lock:
            for name, value in amounts.items():
                setattr(self, name, getattr(self, name) + value)

    def add_drafts(self, stats: dict[str, DraftStats]) -> None:
        with self._lock:
            for name, d in stats.items():
                self.drafts.setdefault(name, DraftStats()).add(d)

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self.http_requests[(route, status)] += 1

    @property
    def real_time_factor(self) -> float:
        """Compute seconds per second of audio decoded (< 1: faster than real time)."""
        return self.compute_seconds / self.audio_seconds_decoded if self.audio_seconds_decoded else 0.0

    def render(self) -> str:
        rows = [
            ("voxtral_sessions_active", "gauge", "live sessions (WebSocket and HTTP)", self.sessions_active),
            ("voxtral_sessions_total", "counter", "sessions opened", self.sessions_total),
            ("voxtral_audio_seconds_in_total", "counter", "seconds of audio received", self.audio_seconds_in),
            (
                "voxtral_audio_seconds_decoded_total",
                "counter",
                "seconds of audio fully transcribed",
                self.audio_seconds_decoded,
            ),
            ("voxtral_tokens_out_total", "counter", "tokens decoded", self.tokens_out),
            ("voxtral_decoder_steps_total", "counter", "batched decoder steps", self.decoder_steps),
            ("voxtral_batch_rows_total", "counter", "stream-steps computed (rows over all batches)", self.batch_rows),
            (
                "voxtral_stream_passes_total",
                "counter",
                "decoder passes of finished transcriptions (per stream)",
                self.stream_passes,
            ),
            (
                "voxtral_accepted_steps_per_pass",
                "gauge",
                "decoder steps a stream gains per pass (drafted verification)",
                self.stream_steps / self.stream_passes if self.stream_passes else 0.0,
            ),
            ("voxtral_compute_seconds_total", "counter", "seconds spent in model compute", self.compute_seconds),
            ("voxtral_real_time_factor", "gauge", "compute seconds per audio second decoded", self.real_time_factor),
            (
                "voxtral_dropped_audio_seconds_total",
                "counter",
                "seconds of audio refused because the server could not keep up",
                self.dropped_audio_seconds,
            ),
            ("voxtral_lag_events_total", "counter", "transcription.lag events sent", self.lag_events),
            (
                "voxtral_backlog_seconds_max",
                "gauge",
                "largest audio backlog of a session at the last step",
                self.backlog_seconds_max,
            ),
        ]
        out = []
        for name, kind, help_, value in rows:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {float(value):.6g}"]
        with self._lock:
            drafts = sorted((name, d.drafted, d.accepted, d.acceptance) for name, d in self.drafts.items())
        for metric, kind, help_, col in (
            ("voxtral_draft_rows_total", "counter", "drafted decoder rows by draft source", 1),
            ("voxtral_draft_accepted_rows_total", "counter", "drafted rows greedy decoding agreed with", 2),
            ("voxtral_draft_acceptance_ratio", "gauge", "accepted / drafted rows by draft source", 3),
        ):
            out += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"]
            out += [f'{metric}{{source="{row[0]}"}} {float(row[col]):.6g}' for row in drafts]
        out += [
            "# HELP voxtral_errors_total error events and 4xx/5xx answers by code",
            "# TYPE voxtral_errors_total counter",
        ]
        with self._lock:
            errors = sorted(self.errors.items())
            requests = sorted(self.http_requests.items())
        out += [f'voxtral_errors_total{{code="{code}"}} {n}' for code, n in errors]
        out += [
            "# HELP voxtral_http_requests_total HTTP requests by route and status",
            "# TYPE voxtral_http_requests_total counter",
        ]
        out += [f'voxtral_http_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in requests]
        return "\n".join(out) + "\n"
