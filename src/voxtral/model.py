"""Public entry points: ``load()`` a model once, then ``transcribe()`` audio
or open a ``stream()``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import _kernels
from .audio import AudioSource, load_audio
from .config import DEFAULT_DELAY_MS, ModelConfig
from .decoder import TextDecoder
from .encoder import AudioEncoder
from .errors import ConfigError, TokenizerError, UsageError
from .kvcache import check_kv_dtype
from .mel import MelFrontEnd
from .segments import Segment, Word, build_segments
from .events import TokenEvent
from .stream import Stream
from .threads import check_num_threads
from .tokenizer import TekkenTokenizer
from .weights import Weights, load_weights

# Offline input is fed in pieces so that text appears while a long file is read.
_OFFLINE_CHUNK_SECONDS = 4.0
_Progress = Callable[[float, float], None]  # on_progress(done_s, total_s)


@dataclass
class Transcription:
    """Result of ``transcribe()``: the text, the token ids, and segments with
    word timestamps (faster-whisper style)."""

    text: str
    token_ids: list[int]
    segments: list[Segment] = field(default_factory=list)
    events: list[TokenEvent] = field(default_factory=list)
    delay_ms: int = DEFAULT_DELAY_MS
    duration: float = 0.0

    @property
    def words(self) -> list[Word]:
        return [w for seg in self.segments for w in seg.words]


class VoxtralModel:
    def __init__(self, config: ModelConfig, weights: Weights, tokenizer: TekkenTokenizer, model_dir: Path, layout: str,
                 kv_cache: str = "f32"):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.layout = layout
        if tokenizer.vocab_size != config.decoder.vocab_size:
            raise ConfigError(
                f"{model_dir}: tekken.json vocabulary ({tokenizer.vocab_size}) does not match the model's "
                f"vocab_size ({config.decoder.vocab_size})"
            )
        self.front = MelFrontEnd(config.audio)
        self.encoder = AudioEncoder(config, weights)
        # The encoder's cache stays fp32: it is bounded (its attention window)
        # and cheap to read; the decoder's 8192-position cache dominates.
        self.decoder = TextDecoder(config, weights, kv_cache)

    @property
    def kv_cache(self) -> str:
        """Storage of the decoder's KV cache: "f32", "bf16" or "int8"."""
        return self.decoder.kv_cache

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sampling_rate

    def stream(self, delay_ms: int = DEFAULT_DELAY_MS, *, sample_rate: int | None = None,
               keep_logits: bool = False, kv_cache: str | None = None) -> Stream:
        """A live transcription stream: ``feed()`` samples (16 kHz unless
        ``sample_rate`` says otherwise; resampled incrementally), ``finish()`` at the end.
        ``kv_cache`` overrides the model's decoder cache storage for this stream."""
        return Stream(self.config, self.front, self.encoder, self.decoder, self.tokenizer, delay_ms,
                      keep_logits=keep_logits, sample_rate=sample_rate, kv_cache=kv_cache)

    def _decode_samples(self, samples: np.ndarray, delay_ms: int, on_progress: _Progress | None = None
                        ) -> Iterator[TokenEvent]:
        stream = self.stream(delay_ms)
        step = int(_OFFLINE_CHUNK_SECONDS * self.sample_rate)
        total = samples.shape[0] / self.sample_rate
        for start in range(0, samples.shape[0], step):
            yield from stream.feed(samples[start : start + step])
            if on_progress is not None:
                on_progress(min(start + step, samples.shape[0]) / self.sample_rate, total)
        yield from stream.finish()

    def transcribe_iter(self, audio: AudioSource, sample_rate: int | None = None, delay_ms: int = DEFAULT_DELAY_MS,
                        on_progress: _Progress | None = None) -> Iterator[TokenEvent]:
        """Yield token events as they are decoded; ``on_progress(done_s, total_s)``
        is called after each piece of the input."""
        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
        yield from self._decode_samples(samples, delay_ms, on_progress)

    def transcribe(self, audio: AudioSource, sample_rate: int | None = None, delay_ms: int = DEFAULT_DELAY_MS
                   ) -> Transcription:
        """Transcribe a path, WAV bytes, or a numpy array (+ sample_rate)."""
        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
        events = list(self._decode_samples(samples, delay_ms))
        ids = [e.token_id for e in events if e.token_id >= 0]
        return Transcription(
            text=self.tokenizer.decode(ids),
            token_ids=ids,
            segments=build_segments(events),
            events=events,
            delay_ms=delay_ms,
            duration=samples.shape[0] / self.sample_rate,
        )


def load(model: str | os.PathLike[str] | None = None, *, num_threads: int | None = None, download: bool = True,
         quant: str | None = None, kv_cache: str = "f32",
         on_status: Callable[[str], None] | None = None) -> VoxtralModel:
    """Load a model directory (Mistral-native, Hugging Face or quantized layout).

    ``model`` is a directory or a Hugging Face repo id; without it the model
    comes from ``VOXTRAL_MODEL_DIR`` or the Hugging Face cache.
    ``quant`` ("q8_0", "q4_0", "q4_k"): use the BF16 checkpoint quantized to
    that type, quantizing it once into a cache (``<model_dir>/.voxtral-quant/``
    when writable, else ``$XDG_CACHE_HOME/voxtral/quant/``) and reusing it
    while the source files are unchanged; ``on_status(message)`` is told when
    that first quantization starts. A quantized model directory loads as it is.
    ``kv_cache`` stores the decoder's KV cache as "f32" (exact), "bf16" or
    "int8" (a half / a quarter of the bytes attention streams per token; see
    kvcache.py).
    """
    from .hub import resolve_model_dir
    from .layout import detect_layout
    from .modes import QTYPES

    check_kv_dtype(kv_cache)
    if quant is not None and quant not in QTYPES:
        raise UsageError(f"unknown quantization type {quant!r} (choose from {', '.join(QTYPES)})")
    if num_threads is not None:
        _kernels.set_num_threads(check_num_threads(num_threads))
    model_dir = Path(resolve_model_dir(model, download=download))
    if quant is not None and detect_layout(model_dir) != "gguf":
        from .quantize import cached_quantized

        model_dir = cached_quantized(model_dir, quant, on_status=on_status)
    tekken = model_dir / "tekken.json"
    if not tekken.is_file():
        raise TokenizerError(f"{model_dir}: tekken.json is missing")
    tokenizer = TekkenTokenizer.from_file(tekken)
    config, weights, layout = load_weights(model_dir, audio_section=tokenizer.audio_config)
    if quant is not None and weights.quant_type != quant:
        raise UsageError(
            f"{model_dir} is a model quantized to {weights.quant_type}; it cannot be loaded as {quant} "
            f"(load it without quant=, or quantize the BF16 checkpoint to {quant})"
        )
    return VoxtralModel(config, weights, tokenizer, model_dir, layout, kv_cache=kv_cache)
