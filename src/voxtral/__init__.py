"""voxtral: Mistral's Voxtral Mini 4B Realtime speech-to-text on ordinary CPUs.

``voxtral.load()`` a model once, then ``model.transcribe(audio)`` or
``model.stream()``. The model classes are imported on first use, so that
``import voxtral`` (and ``python -m voxtral --help``) stays instant.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .omp_waits import short_openmp_spins

short_openmp_spins()  # before any module loads the kernels' OpenMP runtime

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

if TYPE_CHECKING:  # what __getattr__ returns, spelled out for type checkers
    from .engine import Engine
    from .events import TokenEvent
    from .model import Transcription, VoxtralModel, load
    from .options import Options
    from .segments import Segment, Word
    from .stream import Stream

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxtral' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "load",
    "VoxtralModel",
    "Transcription",
    "Stream",
    "Options",
    "Engine",
    "TokenEvent",
    "Segment",
    "Word",
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
