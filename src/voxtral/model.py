"""Public entry points: ``load()`` a model once, then ``transcribe()`` audio
or open a ``stream()``."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
from .errors import ConfigError, TokenizerError, UsageError, VoxtralError
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
        if batch_size is not None:
            result = next(
                self.transcribe_many([audio], batch_size=batch_size, sample_rate=sample_rate, options=options)
            )
            if isinstance(result, VoxtralError):
                raise result
            return result
        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
        return self._transcription(list(self._decode_samples(samples, options)), options, samples.shape[0])

    def _transcription(self, events: list[TokenEvent], options: Options, n_samples: int) -> Transcription:
        ids = [e.token_id for e in events if e.token_id >= 0]
        return Transcription(
            text=self.tokenizer.decode(ids),
            token_ids=ids,
            segments=build_segments(events),
            events=events,
            delay_ms=options.delay_ms,
            duration=n_samples / self.sample_rate,
        )

    def transcribe_many(
        self,
        audios: Iterable[AudioSource],
        *,
        batch_size: int,
        sample_rate: int | None = None,
        delay_ms: int | None = None,
        options: Options | None = None,
        draft_steps: int | None = None,
    ) -> Iterator[Transcription | VoxtralError]:
        """Several recordings decoded together: each is cut at silences (Silero
        VAD, the ``vad`` extra) and up to ``batch_size`` segments, of one
        recording or of several, are decoded in the same passes over the
        weights. Each segment's tokens are those of transcribing it alone, its
        times on its own recording's timeline. Yields one result per input, in
        input order, as soon as it and those before it are done: its
        ``Transcription``, or the ``VoxtralError`` that reading it raised (the
        others go on). A recording is read only when its segments are next,
        so memory holds the audio of at most ``batch_size`` + 1 recordings."""
        from .vad import speech_segments

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        options = self.stream_options(options, delay_ms=delay_ms, draft_steps=draft_steps)
        segment_options = dataclasses.replace(options, sample_rate=None)  # load_audio resamples
        inputs = enumerate(audios)
        results: dict[int, _Recording | VoxtralError] = {}
        waiting: deque[tuple[int, int, np.ndarray, float]] = deque()  # recording, segment, samples, offset (s)
        active: dict[Stream, tuple[int, int, float]] = {}
        next_out, read_all = 0, False
        while True:
            while len(active) < batch_size and (waiting or not read_all):
                if not waiting:
                    item = next(inputs, None)
                    if item is None:
                        read_all = True
                        break
                    i, audio = item
                    try:
                        samples = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate)
                    except VoxtralError as exc:
                        results[i] = exc
                        continue
                    segments = speech_segments(samples)
                    results[i] = _Recording(samples.shape[0], [[] for _ in segments], len(segments))
                    for j, seg in enumerate(segments):
                        waiting.append((i, j, samples[seg.start : seg.end], seg.start / self.sample_rate))
                    continue
                i, j, piece, offset = waiting.popleft()
                stream = Stream(self, segment_options)
                stream.push(piece)
                stream.end()
                active[stream] = (i, j, offset)
            while next_out in results and not _pending(results[next_out]):
                finished = results.pop(next_out)
                if isinstance(finished, _Recording):
                    events = [e for part in finished.parts for e in part]
                    yield self._transcription(events, options, finished.n_samples)
                else:
                    yield finished
                next_out += 1
            if not active:
                if read_all and not waiting:
                    return
                continue
            for stream, events in self.engine.step(list(active)).items():
                i, j, offset = active[stream]
                recording = results[i]
                assert isinstance(recording, _Recording)
                recording.parts[j] += [
                    dataclasses.replace(e, start=e.start + offset, end=e.end + offset) for e in events
                ]
            for stream in [st for st in active if st.completed]:
                i, _, _ = active.pop(stream)
                recording = results[i]
                assert isinstance(recording, _Recording)
                recording.open -= 1


@dataclass
class _Recording:
    """One input of ``transcribe_many`` while its segments are decoded."""

    n_samples: int
    parts: list[list[TokenEvent]]  # events per segment, in segment order
    open: int  # segments not yet completed


def _pending(result: _Recording | VoxtralError) -> bool:
    return isinstance(result, _Recording) and result.open > 0


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
