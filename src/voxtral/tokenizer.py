"""Tekken tokenizer, decoding side (``tekken.json``).

Layout of ``tekken.json`` (as mistral-common writes it):

- ``config``: ``default_vocab_size`` (model vocabulary, 131072),
  ``default_num_special_tokens`` (1000), ``pattern``, ``version``...
- ``vocab``: list of ``{"rank", "token_bytes" (base64), "token_str"}`` in rank
  order; only the first ``default_vocab_size - default_num_special_tokens``
  entries are used (the file may hold more).
- ``special_tokens``: ``{"rank", "token_str", "is_control"}`` for ranks below
  ``default_num_special_tokens``; ranks without an entry are fillers
  ``<SPECIAL_{rank}>``.
- ``audio`` (optional): sampling rate, frame rate, streaming delay settings...

Model id ``i >= num_special`` is the byte piece ``vocab[i - num_special]``; ids
below ``num_special`` are control tokens and never printed.

Decoding follows mistral-common's ``Tekkenizer.decode(ids, IGNORE)`` exactly:
each maximal run of non-control ids is joined and decoded as UTF-8 with
``errors="replace"``, control ids are dropped. (A control id therefore ends a
run: the bytes of one character split by a control token decode as replacement
characters, as in the reference.) :class:`StreamDecoder` produces the same text
incrementally.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import TokenizerError

__all__ = ["TekkenTokenizer", "StreamDecoder", "TEKKEN_FILENAME"]

TEKKEN_FILENAME = "tekken.json"

# Used by mistral-common for files that predate the ``special_tokens`` section.
_LEGACY_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)
_FILLER = "<SPECIAL_{id}>"


def _positive_int(cfg: dict, key: str, name: str) -> int:
    if key not in cfg:
        raise TokenizerError(f"{name}: config.{key} is missing")
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise TokenizerError(f"{name}: config.{key} must be a positive integer, got {v!r}")
    return v


class TekkenTokenizer:
    """Decoder for Mistral's Tekken tokenizer, loaded from ``tekken.json``."""

    def __init__(
        self,
        pieces: list[bytes],
        special_names: list[str],
        vocab_size: int,
        num_special: int,
        *,
        audio_config: dict | None = None,
        version: str | None = None,
        path: Path | None = None,
    ) -> None:
        """Low-level constructor: ``pieces`` are the byte pieces of ids
        ``num_special .. vocab_size - 1`` (exactly ``vocab_size - num_special`` of
        them), ``special_names`` the names of ids ``0 .. num_special - 1``.
        Normally use :meth:`from_file`."""
        name = str(path) if path is not None else "<tekken>"
        if num_special <= 0 or vocab_size <= num_special:
            raise TokenizerError(f"{name}: need 0 < num_special ({num_special}) < vocab_size ({vocab_size})")
        if len(pieces) != vocab_size - num_special:
            raise TokenizerError(f"{name}: expected {vocab_size - num_special} vocabulary pieces, got {len(pieces)}")
        if len(special_names) != num_special:
            raise TokenizerError(f"{name}: expected {num_special} special token names, got {len(special_names)}")
        self._path = path
        self._name = name
        self._vocab_size = vocab_size
        self._num_special = num_special
        # Index by model id; control ids map to b"" (never printed).
        self._pieces: list[bytes] = [b""] * num_special + list(pieces)
        self._special_names = list(special_names)
        self._special_ids: dict[str, int] = {}
        for i, s in enumerate(self._special_names):
            if s in self._special_ids:
                raise TokenizerError(f"{name}: special token {s!r} is defined twice")
            self._special_ids[s] = i
        self._audio_config = dict(audio_config) if audio_config is not None else None
        self._version = version

    # -- loading -----------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TekkenTokenizer:
        """Load ``tekken.json`` (or ``DIR/tekken.json`` when given a directory).

        Raises :class:`TokenizerError` (message naming the file) if it is
        missing, unreadable, not JSON, or lacks/garbles the required sections.
        """
        p = Path(path)
        if p.is_dir():
            p = p / TEKKEN_FILENAME
        name = str(p)
        try:
            with open(p, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise TokenizerError(f"{name}: tokenizer file not found") from None
        except OSError as e:
            raise TokenizerError(f"{name}: cannot read tokenizer file ({e.strerror or e})") from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{name}: not valid JSON ({e})") from None
        return cls.from_dict(data, path=p)

    @classmethod
    def from_dict(cls, data: Any, *, path: str | os.PathLike[str] | None = None) -> TekkenTokenizer:
        """Build from the parsed content of a ``tekken.json`` file."""
        p = Path(path) if path is not None else None
        name = str(p) if p is not None else "<tekken>"
        if not isinstance(data, dict):
            raise TokenizerError(f"{name}: expected a JSON object at the top level")
        cfg = data.get("config")
        if not isinstance(cfg, dict):
            raise TokenizerError(f"{name}: the 'config' section is missing")
        vocab_size = _positive_int(cfg, "default_vocab_size", name)
        num_special = _positive_int(cfg, "default_num_special_tokens", name)
        if num_special >= vocab_size:
            raise TokenizerError(
                f"{name}: default_num_special_tokens ({num_special}) must be below default_vocab_size ({vocab_size})"
            )
        version = cfg.get("version")

        vocab = data.get("vocab")
        if not isinstance(vocab, list):
            raise TokenizerError(f"{name}: the 'vocab' section is missing")
        n_inner = vocab_size - num_special
        if len(vocab) < n_inner:
            raise TokenizerError(
                f"{name}: vocab has {len(vocab)} entries, fewer than default_vocab_size - "
                f"default_num_special_tokens = {n_inner}"
            )
        pieces: list[bytes] = []
        b64 = base64.b64decode
        try:
            for i in range(n_inner):
                entry = vocab[i]
                tb = entry["token_bytes"]
                rank = entry.get("rank", i)
                if rank != i:
                    raise TokenizerError(f"{name}: vocab entry {i} has rank {rank!r}, expected {i}")
                pieces.append(b64(tb, validate=True))
        except TokenizerError:
            raise
        except (binascii.Error, ValueError):
            raise TokenizerError(f"{name}: vocab entry {len(pieces)}: token_bytes is not valid base64") from None
        except (KeyError, TypeError, AttributeError):
            raise TokenizerError(f"{name}: vocab entry {len(pieces)} has no 'token_bytes' string") from None
        for i in range(min(256, n_inner)):
            if pieces[i] != bytes([i]):
                raise TokenizerError(f"{name}: vocab entry {i} must be the single byte 0x{i:02x}")
        if len(set(pieces)) != len(pieces):
            raise TokenizerError(f"{name}: vocab contains duplicate token byte strings")

        special = data.get("special_tokens")
        names: list[str | None] = [None] * num_special
        if special is None:
            # Old files (<= v7) carry no special_tokens section: mistral-common's defaults.
            for i, s in enumerate(_LEGACY_SPECIAL_TOKENS[:num_special]):
                names[i] = s
        else:
            if not isinstance(special, list):
                raise TokenizerError(f"{name}: 'special_tokens' must be a list")
            for k, t in enumerate(special):
                try:
                    rank, tok = t["rank"], t["token_str"]
                except (KeyError, TypeError):
                    raise TokenizerError(f"{name}: special_tokens[{k}] needs 'rank' and 'token_str'") from None
                if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_special:
                    raise TokenizerError(
                        f"{name}: special token {tok!r} has rank {rank!r}, outside 0..{num_special - 1}"
                    )
                if not isinstance(tok, str):
                    raise TokenizerError(f"{name}: special token rank {rank} has a non-string token_str")
                if names[rank] is not None:
                    raise TokenizerError(f"{name}: two special tokens have rank {rank}")
                names[rank] = tok
        full = [n if n is not None else _FILLER.format(id=i) for i, n in enumerate(names)]

        audio = data.get("audio")
        if audio is not None and not isinstance(audio, dict):
            raise TokenizerError(f"{name}: the 'audio' section must be an object")
        return cls(
            pieces,
            full,
            vocab_size,
            num_special,
            audio_config=audio,
            version=version if isinstance(version, str) else None,
            path=p,
        )

    # -- properties --------------------------------------------------------

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def version(self) -> str | None:
        """``config.version`` of the file (e.g. "v7"), if given."""
        return self._version

    @property
    def vocab_size(self) -> int:
        """Model vocabulary size (``config.default_vocab_size``), control ids included."""
        return self._vocab_size

    @property
    def num_special(self) -> int:
        """Number of control ids (``config.default_num_special_tokens``)."""
        return self._num_special

    @property
    def bos_id(self) -> int:
        return self.special_id("<s>")

    @property
    def eos_id(self) -> int:
        return self.special_id("</s>")

    @property
    def streaming_pad_id(self) -> int:
        return self.special_id("[STREAMING_PAD]")

    @property
    def audio_config(self) -> dict | None:
        """A copy of the file's ``audio`` section, or None if it has none."""
        return json.loads(json.dumps(self._audio_config)) if self._audio_config is not None else None

    def special_id(self, name: str) -> int:
        """The id of the special token called ``name`` (e.g. "[STREAMING_PAD]")."""
        try:
            return self._special_ids[name]
        except KeyError:
            raise TokenizerError(f"{self._name}: no special token {name!r} in this tokenizer") from None

    def special_name(self, token_id: int) -> str:
        """The name of control id ``token_id`` (``<SPECIAL_n>`` for fillers)."""
        i = self._check_id(token_id)
        if i >= self._num_special:
            raise TokenizerError(f"{self._name}: token id {i} is not a special token")
        return self._special_names[i]

    def is_control(self, token_id: int) -> bool:
        """True for control ids (``id < num_special``), which are never printed."""
        return self._check_id(token_id) < self._num_special

    def _check_id(self, token_id: Any) -> int:
        try:
            i = int(token_id)  # accepts numpy integers
        except (TypeError, ValueError):
            raise TokenizerError(f"{self._name}: token id {token_id!r} is not an integer") from None
        if i != token_id or isinstance(token_id, bool):
            raise TokenizerError(f"{self._name}: token id {token_id!r} is not an integer")
        if not 0 <= i < self._vocab_size:
            raise TokenizerError(f"{self._name}: token id {i} is out of range (vocabulary size {self._vocab_size})")
        return i

    def token_bytes(self, token_id: int) -> bytes:
        """The byte piece of ``token_id`` (b"" for control ids)."""
        return self._pieces[self._check_id(token_id)]

    # -- decoding ----------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: control ids are dropped; each run of non-control ids
        is decoded as UTF-8 with ``errors="replace"`` (same as mistral-common's
        ``Tekkenizer.decode(ids, SpecialTokenPolicy.IGNORE)``)."""
        ns = self._num_special
        pieces = self._pieces
        out: list[str] = []
        run: list[bytes] = []
        for t in ids:
            i = self._check_id(t)
            if i < ns:
                if run:
                    out.append(b"".join(run).decode("utf-8", errors="replace"))
                    run = []
            else:
                run.append(pieces[i])
        if run:
            out.append(b"".join(run).decode("utf-8", errors="replace"))
        return "".join(out)

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder (see :class:`StreamDecoder`)."""
        return StreamDecoder(self)

    def __repr__(self) -> str:
        return f"TekkenTokenizer({self._name!r}, vocab_size={self._vocab_size}, num_special={self._num_special})"


class StreamDecoder:
    """Incremental decoding, one token at a time.

    ``push(id)`` returns the text that became complete with this token: bytes of
    a UTF-8 character split across tokens are held back until its last byte
    arrives. A control id ends the current run (incomplete bytes become U+FFFD,
    as :meth:`TekkenTokenizer.decode` does). ``flush()`` returns whatever is
    still held back. The concatenation of all outputs equals ``decode(ids)``.
    """

    def __init__(self, tokenizer: TekkenTokenizer) -> None:
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        tok = self._tok
        i = tok._check_id(token_id)
        if i < tok._num_special:
            return self.flush()
        return self._dec.decode(tok._pieces[i])

    def push_many(self, ids: Iterable[int]) -> str:
        return "".join(self.push(t) for t in ids)

    def flush(self) -> str:
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out

    @property
    def pending(self) -> bool:
        """True if incomplete UTF-8 bytes are being held back."""
        return bool(self._dec.getstate()[0])
