"""Signals that end a run the way Ctrl+C does, and never get lost.

SIGINT, SIGTERM (timeout, systemd, docker) and SIGHUP raise KeyboardInterrupt(signum),
so every ``finally`` removes its temporaries and the exit code is 128 + signum. Python
drops an exception raised where it cannot propagate (a weakref callback inside the import
machinery, a ``__del__``: "Exception ignored in ..."), and an interrupted run would then
go on to the end, committing its output. So the signal is also recorded, and the long
loops call ``check()`` at safe points (before each tensor, each transcribed event, before
an output is committed) to raise it again.
"""

from __future__ import annotations

import signal

_HANDLED = ("SIGINT", "SIGTERM", "SIGHUP")
_pending: int | None = None


def _on_signal(signum, frame):
    global _pending
    _pending = signum
    raise KeyboardInterrupt(signum)


def install() -> None:
    """Route the run-ending signals through KeyboardInterrupt (main thread only; elsewhere a no-op)."""
    for name in _HANDLED:
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), _on_signal)
            except (ValueError, OSError):  # not the main thread
                pass


def check() -> None:
    """Raise KeyboardInterrupt again if a signal arrived whose exception may have been dropped."""
    if _pending is not None:
        raise KeyboardInterrupt(_pending)


def clear() -> None:
    """The interrupt was handled as the normal end of a run (Ctrl+C ends a microphone session)."""
    global _pending
    _pending = None


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal that ended the run (SIGINT when Python raised it itself)."""
    signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
    return 128 + int(signum)
