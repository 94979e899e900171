"""The one engine: the encoder and decoder work of any set of streams, one
pass per stage.

A decoder step is memory-bound (one pass over ~3.4 B weights), so rows of
many streams, and several drafted steps of one stream, cost little more
than one row. The matrix kernels are row-deterministic (a row's result does
not depend on the other rows of the call), the norms and activations work
row by row, and each stream's attention runs over its own KV cache with its
own positions: so a stream gives exactly the bits it would give alone,
whatever else is in the pass. ``Stream.feed()`` runs this engine on one
stream; the server runs it on all its sessions' streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .drafts import DraftStats, count_drafts
from .events import TokenEvent

if TYPE_CHECKING:
    from .decoder import TextDecoder
    from .encoder import AudioEncoder
    from .stream import Stream


class Engine:
    """Steps streams (see the protocol in stream.py). Counters: decoder
    ``passes``, decoder ``rows`` computed, ``stream_steps`` (one stream's
    part in one pass) and ``tokens`` accepted: tokens / stream_steps are the
    steps a stream gains per pass from drafts; ``drafts``: rows drafted and
    accepted by draft source (drafts.py)."""

    def __init__(self, encoder: AudioEncoder, decoder: TextDecoder):
        self.encoder = encoder
        self.decoder = decoder
        self.passes = 0
        self.rows = 0
        self.stream_steps = 0
        self.tokens = 0
        self.drafts: dict[str, DraftStats] = {}

    def step(
        self, streams: list[Stream], failed: dict[Stream, Exception] | None = None
    ) -> dict[Stream, list[TokenEvent]]:
        """One encoder pass over every stream's waiting audio, then one decoder
        pass over every stream's next step; the new events by stream (a stream
        that is done also gets its closing text, and is then ``completed``).
        With ``failed``, an exception in one stream's own part of the step
        leaves that stream out (recorded there) and the others go on; an
        exception in a shared pass is raised."""
        events: dict[Stream, list[TokenEvent]] = {}
        mel = {s: got for s, got in _each(streams, failed, lambda s: s.take_mel()) if got is not None}
        if mel:
            embeddings = dict(
                zip(
                    mel, self.encoder.forward([st for st, _ in mel.values()], [m for _, m in mel.values()]), strict=True
                )
            )
            _each(list(mel), failed, lambda s: s.add_embeddings(embeddings[s]))
        steps = {s: step for s, step in _each(streams, failed, lambda s: s.next_step()) if step is not None}
        if steps:
            logits = self.decoder.logits(self.decoder.forward([step.rows for step in steps.values()]))
            self.passes += 1
            rows, at = {}, 0
            for s, step in steps.items():
                rows[s] = logits[at : at + step.rows.n_out]
                at += step.rows.n_out
                self.rows += step.rows.x.shape[0]
                self.stream_steps += 1
            for s, got in _each(list(steps), failed, lambda s: s.accept(steps[s], rows[s])):
                self.tokens += len(got)
                count_drafts(self.drafts, steps[s].sources, len(got) - 1)
                events[s] = got
        for s, done in _each(streams, failed, lambda s: s.done):
            if done:
                events[s] = s.close(events.get(s, []))
        return events

    def run(self, stream: Stream) -> list[TokenEvent]:
        """Step one stream until it has to wait for audio (or is done)."""
        out: list[TokenEvent] = []
        while True:
            got = self.step([stream]).get(stream)
            if got is None:
                return out
            out += got
            if stream.completed:
                return out


def _each(streams: list[Stream], failed: dict[Stream, Exception] | None, call) -> list[tuple[Stream, object]]:
    """(stream, call(stream)) for each stream not yet failed; with ``failed``,
    a stream whose call raises is recorded there and left out."""
    out = []
    for s in streams:
        if failed is not None and s in failed:
            continue
        try:
            out.append((s, call(s)))
        except Exception as exc:
            if failed is None:
                raise
            failed[s] = exc
    return out
