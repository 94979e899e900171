"""Public entry points: ``load()`` a model once, then ``transcribe()`` audio
or open a ``stream()``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import _kernels
from .audio import PathLike, load_audio
from .config import DEFAULT_DELAY_MS, ModelConfig
from .decoder import TextDecoder
from .encoder import AudioEncoder
from .engine import Engine
from .errors import ConfigError, TokenizerError, UsageError
from .events import TokenEvent
from .mel import LogMelStream, MelFrontEnd
from .options import Options
from .segments import Segment, Word, build_segments
from .stream import Stream, StreamStart
from .threads import check_num_threads
from .tokenizer import TekkenTokenizer
from .weights import Weights, load_weights

# Offline input is fed in pieces so that text appears while a long file is read.
_OFFLINE_CHUNK_SECONDS = 4.0

# what load_audio takes; on_progress(done_s, total_s)
AudioSource = PathLike | bytes | bytearray | memoryview | BinaryIO | np.ndarray
ProgressFn = Callable[[float, float], object]


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
    def __init__(
        self,
        config: ModelConfig,
        weights: Weights,
        tokenizer: TekkenTokenizer,
        model_dir: Path,
        layout: str,
        options: Options | None = None,
    ):
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
        self.decoder = TextDecoder(config, weights)
        self.engine = Engine(self.encoder, self.decoder)  # what every stream of this model runs on
        self.options = options if options is not None else Options()  # the defaults of stream() and transcribe()
        self._starts: dict[str, StreamStart] = {}

    def start_state(self, kv_cache: str) -> StreamStart:
        """The state every stream starts from: its left padding (silence) framed
        and encoded, computed once per KV cache kind and copied into each new
        stream (so opening a stream costs no encoder work, live or not)."""
        got = self._starts.get(kv_cache)
        if got is None:
            mel = LogMelStream(self.front)
            enc = self.encoder.new_state(kv_cache)
            silence = np.zeros(self.config.n_left_pad_tokens * self.config.audio.samples_per_token, np.float32)
            got = StreamStart(mel, enc, self.encoder.push(enc, mel.push(silence)))
            self._starts[kv_cache] = got
        return got

    @property
    def kv_cache(self) -> str:
        """Default storage of the KV caches: "f32", "bf16" or "int8"."""
        return self.options.kv_cache

    def stream_options(self, options: Options | None = None, **changes: Any) -> Options:
        """``options`` (default: the model's) with ``changes`` (None = unchanged), checked."""
        return (options or self.options).replace(**changes)

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sampling_rate

    def stream(
        self,
        delay_ms: int | None = None,
        *,
        sample_rate: int | None = None,
        keep_logits: bool = False,
        kv_cache: str | None = None,
        draft_steps: int | None = None,
        drafts: str | None = None,
        options: Options | None = None,
    ) -> Stream:
        """A live transcription stream: ``feed()`` samples (16 kHz unless
        ``sample_rate`` says otherwise; resampled incrementally), ``finish()`` at the end.
        Each argument overrides the model's default (``options``: a whole set of them)."""
        return Stream(
            self,
            self.stream_options(
                options,
                delay_ms=delay_ms,
                sample_rate=sample_rate,
                keep_logits=keep_logits or None,
                kv_cache=kv_cache,
                draft_steps=draft_steps,
                drafts=drafts,
            ),
        )

    def _decode_samples(
        self, samples: np.ndarray, options: Options, on_progress: ProgressFn | None = None
    ) -> Iterator[TokenEvent]:
        stream = Stream(self, dataclasses.replace(options, sample_rate=None))  # load_audio resampled it
        step = int(_OFFLINE_CHUNK_SECONDS * self.sample_rate)
        total = samples.shape[0] / self.sample_rate
        for start in range(0, samples.shape[0], step):
            yield from stream.feed(samples[start : start + step])
            if on_progress is not None:
                on_progress(min(start + step, samples.shape[0]) / self.sample_rate, total)
        yield from stream.finish()

    def transcribe_iter(
        self,
        audio: AudioSource,
        sample_rate: int | None = None,
        delay_ms: int | None = None,
        on_progress: ProgressFn | None = None,
        *,
        options: Options | None = None,
        draft_steps: int | None = None,
    ) -> Iterator[TokenEvent]:
        """Yield token events as they are decoded; ``on_progress(done_s, total_s)``
        is called after each piece of the input."""
        options = self.stream_options(options, delay_ms=delay_ms, draft_steps=draft_steps)
        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
        yield from self._decode_samples(samples, options, on_progress)

    def transcribe(
        self,
        audio: AudioSource,
        sample_rate: int | None = None,
        delay_ms: int | None = None,
        *,
        options: Options | None = None,
        draft_steps: int | None = None,
        batch_size: int | None = None,
    ) -> Transcription:
        """Transcribe a path, WAV bytes, or a numpy array (+ sample_rate).
        ``batch_size=N``: cut the recording at silences (Silero VAD, the ``vad``
        extra) and decode up to N segments together, one pass over the weights
        for all of them; each segment's tokens are those of transcribing it
        alone, its times on the recording's timeline. Without it: the whole
        recording as one stream (exactly the streaming result)."""
        options = self.stream_options(options, delay_ms=delay_ms, draft_steps=draft_steps)
        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
        if batch_size is None:
            events = list(self._decode_samples(samples, options))
        else:
            events = self._decode_segments(samples, dataclasses.replace(options, sample_rate=None), batch_size)
        ids = [e.token_id for e in events if e.token_id >= 0]
        return Transcription(
            text=self.tokenizer.decode(ids),
            token_ids=ids,
            segments=build_segments(events),
            events=events,
            delay_ms=options.delay_ms,
            duration=samples.shape[0] / self.sample_rate,
        )

    def _decode_segments(self, samples: np.ndarray, options: Options, batch_size: int) -> list[TokenEvent]:
        """Speech segments decoded as independent streams, up to ``batch_size`` at a time."""
        from .vad import speech_segments

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        todo = list(enumerate(speech_segments(samples)))
        found: dict[int, list[TokenEvent]] = {}
        active: dict[Stream, tuple[int, float]] = {}
        while todo or active:
            while todo and len(active) < batch_size:
                i, seg = todo.pop(0)
                stream = Stream(self, options)
                stream.push(samples[seg.start : seg.end])
                stream.end()
                active[stream] = (i, seg.start / self.sample_rate)
                found[i] = []
            for stream, events in self.engine.step(list(active)).items():
                i, offset = active[stream]
                found[i] += [dataclasses.replace(e, start=e.start + offset, end=e.end + offset) for e in events]
            for stream in [s for s in active if s.completed]:
                del active[stream]
        return [e for i in sorted(found) for e in found[i]]


def load(
    model: str | os.PathLike[str] | None = None,
    *,
    num_threads: int | None = None,
    download: bool = True,
    quant: str | None = None,
    kv_cache: str = "f32",
    draft_steps: int | None = None,
    on_status: Callable[[str], None] | None = None,
) -> VoxtralModel:
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
    kvcache.py); ``draft_steps``: decoder steps verified per pass (see stream.py).
    Both are the defaults of the model's streams and transcriptions.
    """
    from .hub import resolve_model_dir
    from .layout import detect_layout
    from .modes import QTYPES

    options = Options(kv_cache=kv_cache).replace(draft_steps=draft_steps)
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
            f"(load it without --quant (quant= in the API) or quantize the BF16 checkpoint to {quant})"
        )
    return VoxtralModel(config, weights, tokenizer, model_dir, layout, options)
