"""Output files that are replaced atomically: written under a temporary name
beside the target and renamed over it only when the run succeeds, so that a
failed or interrupted run never leaves an existing file truncated."""

from __future__ import annotations

import os
import stat
import tempfile

from .errors import UsageError


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicOutput:
    """``with AtomicOutput(path) as out: out.write(...)``: ``path`` appears
    (or is replaced) when the block ends without an exception and
    :meth:`discard` was not called; otherwise it is left as it was.

    Targets that are not regular files (``/dev/stdout``, a FIFO) are written
    directly: they cannot be renamed over and hold nothing to protect."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._tmp: str | None = None
        self._file = None
        self._keep = True
        self._count = 0

    def __enter__(self) -> AtomicOutput:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write ({exc.strerror})") from None
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                self._file = open(self.path, "w", encoding="utf-8")
                return self
            directory = os.path.dirname(os.path.abspath(self.path))
            fd, self._tmp = tempfile.mkstemp(
                dir=directory, prefix="." + os.path.basename(self.path) + ".", suffix=".part"
            )
            self._mode = stat.S_IMODE(st.st_mode) if st is not None else _default_mode()
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        return self

    @property
    def written(self) -> bool:
        """Whether anything was written."""
        return self._count > 0

    def write(self, text: str) -> int:
        self._count += len(text)
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def discard(self) -> None:
        """Leave the target as it was when the block ends."""
        self._keep = False

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._file.close()
        except OSError:
            if exc_type is None:
                self._remove_tmp()
                raise
        if self._tmp is None:
            return
        if exc_type is None and self._keep:
            try:
                os.chmod(self._tmp, self._mode)
                os.replace(self._tmp, self.path)
            except OSError as exc:
                self._remove_tmp()
                raise UsageError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        else:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
