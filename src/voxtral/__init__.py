"""voxtral: Mistral's Voxtral Mini 4B Realtime speech-to-text on ordinary CPUs.

``voxtral.load()`` a model once, then ``model.transcribe(audio)`` or
``model.stream()``. The model classes are imported on first use, so that
``import voxtral`` (and ``python -m voxtral --help``) stays instant.
"""

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

_LAZY = {
    "load": "model",
    "VoxtralModel": "model",
    "Transcription": "model",
    "Stream": "stream",
    "Options": "options",
    "Engine": "engine",
    "TokenEvent": "events",
    "Segment": "segments",
    "Word": "segments",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxtral' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    *_LAZY,
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
