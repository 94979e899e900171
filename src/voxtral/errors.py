"""One exception hierarchy for everything a user can get wrong.

Every error a user can cause (bad audio, a broken model directory, a missing
microphone) is a subclass of :class:`VoxtralError`. The CLI turns each into a
one-line message and the class's ``exit_code``; library users catch
``VoxtralError`` (or a subclass) instead of a zoo of OSError/ValueError/KeyError.
"""

from __future__ import annotations


class VoxtralError(Exception):
    """Base class of every error voxtral raises on purpose."""

    exit_code = 1


class UsageError(VoxtralError):
    """Invalid arguments or option combinations (CLI or API)."""

    exit_code = 2


class AudioError(VoxtralError):
    """Audio that cannot be read or used: not WAV, truncated, NaN/Inf samples..."""

    exit_code = 3


class ModelFileError(VoxtralError):
    """Base for problems with the model files on disk."""

    exit_code = 4


class ModelNotFoundError(ModelFileError):
    """No model directory was given and none could be found or downloaded."""


class ConfigError(ModelFileError):
    """params.json / config.json missing, unparsable, or inconsistent."""


class CheckpointError(ModelFileError):
    """A safetensors file is corrupt, truncated, or does not match the config
    (missing tensor, wrong shape or dtype, header offsets that lie)."""


class TokenizerError(ModelFileError):
    """tekken.json missing or malformed."""


class DeviceError(VoxtralError):
    """Audio input device problems: no PortAudio, no microphone, stream errors."""

    exit_code = 5


class BindError(VoxtralError):
    """The server cannot listen on its address and port (in use, not allowed, no such address)."""

    exit_code = 6
