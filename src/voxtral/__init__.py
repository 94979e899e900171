"""voxtral: Mistral's Voxtral Mini 4B Realtime speech-to-text on ordinary CPUs."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AudioError,
    CheckpointError,
    ConfigError,
    DeviceError,
    ModelFileError,
    ModelNotFoundError,
    TokenizerError,
    UsageError,
    VoxtralError,
)

__all__ = [
    "__version__",
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "ModelFileError",
    "ModelNotFoundError",
    "TokenizerError",
    "UsageError",
    "VoxtralError",
]
