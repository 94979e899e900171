"""Command line: ``python -m voxtral FILE...`` prints the transcript as it is
decoded; ``--stdin`` and ``--mic`` transcribe live input;
``python -m voxtral inspect DIR`` checks a model directory.

The module is laid out in three parts: the argument definitions
(``build_parser``), the checks (``check_args``: everything that can be
refused before the model loads), and the actions (``run`` and ``_run_*``).
Importing it loads neither numpy nor the C extension, so ``--help`` and
``--version`` are instant and work even when the extension cannot load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence

from . import __version__, interrupts
from .config import DEFAULT_DELAY_MS, DELAY_STEP_MS, MAX_DELAY_MS, MIN_DELAY_MS
from .errors import UsageError, VoxtralError
from .formats import EXTENSIONS, WRITERS
from .limits import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .modes import KV_DTYPES, QTYPES
from .options import Options, add_draft_arguments
from .output import AtomicOutput
from .threads import MAX_THREADS, check_num_threads

# ---------------------------------------------------------------------------
# Argument definitions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voxtral",
        description="Transcribe speech with Voxtral Mini 4B Realtime on the CPU. Text is printed as it is decoded.",
        epilog="Other commands (each with its own --help): "
        "voxtral serve (realtime and OpenAI-compatible transcription server), "
        "voxtral quantize SRC DST --type TYPE (quantized model directory), "
        "voxtral inspect DIR (check a model directory without loading it).",
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="audio files: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF (any rate and channels); "
        "M4A/MP4, WebM and others when ffmpeg is installed",
    )
    src.add_argument(
        "--stdin", action="store_true", help="read audio from standard input: WAV (detected by its header) or raw PCM"
    )
    src.add_argument("--mic", action="store_true", help="capture the default input device (or --device) until Ctrl+C")
    src.add_argument("--device", metavar="NAME", help="input device name or index for --mic (see --list-devices)")
    src.add_argument("--list-devices", action="store_true", help="list the audio input devices and exit")
    src.add_argument("--record", metavar="FILE", help="with --mic: save the captured audio as a WAV file")
    src.add_argument(
        "--vad",
        action="store_true",
        help="with --mic: decode only speech (voice activity detection); the stream is flushed at "
        "each pause and output lines break there",
    )
    src.add_argument("--vad-threshold", type=float, default=0.5, help="speech probability for --vad (default 0.5)")
    src.add_argument(
        "--vad-silence-ms", type=int, default=500, help="silence that ends a turn of speech for --vad (default 500)"
    )
    src.add_argument(
        "--raw-format",
        default=None,
        help="stdin is raw PCM in this format (s16le, s24le, s32le, u8, f32le, f64le); "
        "without it stdin must be an audio file (WAV, FLAC, OGG, MP3...)",
    )
    src.add_argument(
        "--raw-rate",
        type=int,
        default=16000,
        help=f"raw PCM sample rate on stdin, {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz (default 16000)",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="model directory (Mistral-native or Hugging Face layout) or Hugging Face repo id; "
        "default: $VOXTRAL_MODEL_DIR, then the Hugging Face cache",
    )
    p.add_argument(
        "--delay-ms",
        type=int,
        default=DEFAULT_DELAY_MS,
        help=f"transcription delay, {MIN_DELAY_MS}..{MAX_DELAY_MS} in steps of {DELAY_STEP_MS} "
        f"(default {DEFAULT_DELAY_MS}); longer is more accurate",
    )
    p.add_argument(
        "--format",
        choices=tuple(WRITERS),
        default="text",
        help="output: text, jsonl (one object per token), srt or vtt subtitles (default text)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the transcript to FILE instead of stdout (an existing FILE is replaced "
        "only at the end, and only if something was transcribed)",
    )
    out.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write one file per input into DIR, named after the input with the format's "
        "extension (.txt, .jsonl, .srt, .vtt)",
    )
    # --quant and --kv-cache are checked in check_args (one-line usage errors)
    p.add_argument(
        "--quant",
        metavar="{" + ",".join(QTYPES) + "}",
        default=None,
        help="run the model with weights quantized to this type (quantized once into a cache "
        "next to the model, reused afterwards); a quantized model directory needs no --quant",
    )
    p.add_argument(
        "--kv-cache",
        metavar="{" + ",".join(KV_DTYPES) + "}",
        default="f32",
        help="decoder KV cache storage: f32 (exact), bf16 or int8 (less memory traffic per token, "
        "slightly different logits; default f32)",
    )
    add_draft_arguments(p, shown_by="--verbose")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="files: cut at silences (voice activity detection, the vad extra) and decode up to N "
        "segments, of one file or several, together (faster on long recordings and many files; "
        "each segment as if transcribed alone)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="at the end, print the engine's statistics on stderr (decoder passes, steps per pass)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"CPU threads, 1..{MAX_THREADS} (default: $VOXTRAL_NUM_THREADS or physical cores)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or status messages on stderr")
    p.add_argument("--no-download", action="store_true", help="never download the model, only use local files")
    p.add_argument("--version", action="version", version=f"voxtral {__version__}")
    return p


# ---------------------------------------------------------------------------
# Checks: everything that can be refused before the model loads


def check_args(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for any invalid argument or combination."""
    if args.list_devices:
        return
    sources = bool(args.files) + args.stdin + args.mic
    if sources == 0:
        raise UsageError("no input: give audio FILEs, --stdin or --mic")
    if sources > 1:
        raise UsageError("choose one input: FILEs, --stdin or --mic")
    if args.device is not None and not args.mic:
        raise UsageError("--device goes with --mic")
    if args.record and not args.mic:
        raise UsageError("--record goes with --mic")
    if args.vad and not args.mic:
        raise UsageError("--vad goes with --mic")
    if args.vad:
        from .vad import VadOptions

        VadOptions(threshold=args.vad_threshold, silence_duration_ms=args.vad_silence_ms)
    if args.threads is not None:
        check_num_threads(args.threads, "--threads")
    if args.quant is not None and args.quant not in QTYPES:
        raise UsageError(f"--quant must be one of {', '.join(QTYPES)}, got {args.quant!r}")
    if args.batch_size is not None and (args.batch_size < 1 or not args.files):
        raise UsageError("--batch-size must be >= 1 and goes with FILE inputs")
    # --delay-ms, --kv-cache, --draft-steps: the options every transcription of the run uses
    args.options = Options(delay_ms=args.delay_ms, kv_cache=args.kv_cache).replace(
        draft_steps=args.draft_steps, drafts=args.drafts
    )
    if args.stdin:
        _check_raw_input(args)
    elif args.raw_format is not None:
        raise UsageError("--raw-format goes with --stdin (a file carries its own format)")
    if args.output_dir is not None:
        if not args.files:
            raise UsageError("--output-dir is for FILE inputs; use -o FILE with --stdin or --mic")
        _check_output_names(args)
    elif len(args.files) > 1 and args.format in ("srt", "vtt"):
        raise UsageError(
            f"{args.format} is one timeline per file: with several files use --output-dir DIR "
            "(one subtitle file per input)"
        )
    if args.output is not None and os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: is a directory (use --output-dir for one file per input)")
    if args.output is not None:
        _check_not_an_input(args.output, args, "-o")
    if args.record is not None:
        _check_not_an_input(args.record, args, "--record")
    if len(args.files) == 1 and not os.path.exists(args.files[0]):
        raise UsageError(f"{args.files[0]}: no such file")  # with several, a missing one is skipped


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_not_an_input(path: str, args: argparse.Namespace, option: str) -> None:
    """Writing the transcript over the audio it comes from destroys the audio."""
    for source in args.files:
        if _same_file(path, source):
            raise UsageError(f"{option} {path} is the input {source}; refusing to overwrite it")
    if args.stdin and os.path.exists(path) and _same_stdin(path):
        raise UsageError(f"{option} {path} is the file on standard input; refusing to overwrite it")


def _same_stdin(path: str) -> bool:
    try:
        a, b = os.fstat(sys.stdin.fileno()), os.stat(path)
    except (OSError, AttributeError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_raw_input(args: argparse.Namespace) -> None:
    if not MIN_SAMPLE_RATE <= args.raw_rate <= MAX_SAMPLE_RATE:
        raise UsageError(f"--raw-rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {args.raw_rate}")
    if args.raw_format is None:
        return  # an audio file on stdin: its header says the rest
    from .audio import SampleFormat  # numpy: only once a run is certain

    try:
        SampleFormat.parse(args.raw_format)
    except VoxtralError as exc:
        raise UsageError(f"--raw-format: {exc}") from None


def output_path(out_dir: str, source: str, fmt: str) -> str:
    """``DIR/<input name without its extension>.<format extension>``, as whisper names them."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] or "audio"
    return os.path.join(out_dir, stem + EXTENSIONS[fmt])


def _check_output_names(args: argparse.Namespace) -> None:
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError(f"--output-dir {args.output_dir}: exists and is not a directory")
    seen: dict[str, str] = {}
    for path in args.files:
        name = output_path(args.output_dir, path, args.format)
        if name in seen:
            raise UsageError(f"{seen[name]} and {path} would both be written to {name}")
        for source in args.files:
            if _same_file(name, source):
                raise UsageError(f"{name} would overwrite the input {source}; choose another --output-dir")
        seen[name] = path


# ---------------------------------------------------------------------------
# Actions


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal that
    the transcript itself does not go to."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last = 0.0
        self._started: tuple[str, float] | None = None  # (name, when) of the file being shown
        self.shown = False

    def show(self, name: str, done: float, total: float) -> None:
        now = time.monotonic()
        if self._started is None or self._started[0] != name:
            self._started = (name, now)
        if not self.enabled or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        bar = "#" * int(frac * 20)
        elapsed = now - self._started[1]
        eta = f"ETA {_clock(elapsed * (1 - frac) / frac)}" if 0.02 <= frac < 1 and elapsed > 1 else ""
        sys.stderr.write(f"\r{name[-32:]:>32} [{bar:<20}] {done:6.1f}/{total:.1f} s {eta:<12}")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()
            self.shown = False


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _note(args, message: str) -> None:
    if not args.quiet:
        print(f"voxtral: {message}", file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"voxtral: error: {message}", file=sys.stderr, flush=True)


def stdin_chunks(f, target_rate: int, raw_format: str, raw_rate: int) -> Iterator:
    """Float32 mono chunks at ``target_rate`` from a byte stream (the
    ``--stdin`` reader; the fuzz harness drives it through this entry point)."""
    from .audio import read_audio_stream

    return read_audio_stream(f, target_rate, name="<stdin>", raw_format=raw_format, raw_rate=raw_rate)


def _file_results(args, model, progress: Progress) -> Iterator[tuple[str, Iterator | VoxtralError]]:
    """(path, its token events or the error reading it) for every file, in order.
    With --batch-size the segments of all files are decoded together
    (``transcribe_many``; no progress per piece), else each file streams."""
    if args.batch_size is not None:
        results = model.transcribe_many(args.files, batch_size=args.batch_size, options=args.options)
        for path, result in zip(args.files, results, strict=True):
            yield path, result if isinstance(result, VoxtralError) else iter(result.events)
        return
    for i, path in enumerate(args.files):
        name = _label(i, args.files) + os.path.basename(path)
        yield (
            path,
            model.transcribe_iter(
                path, options=args.options, on_progress=lambda done, total, name=name: progress.show(name, done, total)
            ),
        )


def _write_file(writer, path: str, events: Iterator, multiple: bool) -> None:
    # The audio is read and checked before the first event: a bad file fails
    # here, before its header or anything else is written.
    first = next(events, None)
    writer.begin(path, multiple)
    if first is not None:
        writer.event(first)
        for e in events:
            writer.event(e)
    writer.end()


def _run_files(args, model, writer, progress: Progress) -> tuple[int, int]:
    """Every file in turn; a bad one is reported and skipped. Returns the exit
    code of the first failure (0 if none) and how many files were done."""
    failed = done = 0
    for path, events in _file_results(args, model, progress):
        try:
            if isinstance(events, VoxtralError):
                raise events
            _write_file(writer, path, events, len(args.files) > 1)
            done += 1
        except VoxtralError as exc:
            progress.clear()
            _error(str(exc))
            failed = failed or exc.exit_code
    progress.clear()
    return failed, done


def _run_files_to_dir(args, model, progress: Progress) -> int:
    """One output file per input in ``--output-dir``, each replaced atomically."""
    try:
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {args.output_dir}: cannot create ({exc.strerror})") from None
    failed = 0
    for path, events in _file_results(args, model, progress):
        target = output_path(args.output_dir, path, args.format)
        try:
            if isinstance(events, VoxtralError):
                raise events
            with AtomicOutput(target) as out:
                writer = WRITERS[args.format](out)
                _write_file(writer, path, events, False)
                writer.close()
        except VoxtralError as exc:
            progress.clear()
            _error(str(exc))
            failed = failed or exc.exit_code
            continue
        progress.clear()
        _note(args, f"{path} -> {target}")
    return failed


def _label(i: int, files: list[str]) -> str:
    return f"({i + 1}/{len(files)}) " if len(files) > 1 else ""


def _run_stdin(args, model, writer) -> int:
    if _isatty(sys.stdin):
        _note(
            args,
            "reading audio from standard input, which is a terminal: pipe audio in "
            "(voxtral --stdin < talk.wav, or arecord ... | voxtral --stdin --raw-format s16le); Ctrl+D ends",
        )
    writer.begin("<stdin>", False)
    stream = model.stream(options=args.options)
    chunks = stdin_chunks(sys.stdin.buffer, model.sample_rate, args.raw_format, args.raw_rate)
    try:
        for chunk in chunks:
            for e in stream.feed(chunk):
                writer.event(e)
    finally:
        if stream.samples_in:
            for e in stream.finish():
                writer.event(e)
            writer.end()
    return 0


def _run_mic(args, model, writer) -> int:
    from .live import Microphone, WavRecorder
    from .pace import RealTimeMonitor

    device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
    mic = Microphone(model.sample_rate, device=device)
    recorder = WavRecorder(args.record, model.sample_rate) if args.record else None
    writer.begin("<mic>", False)
    stream = model.stream(options=args.options)
    gate = _speech_gate(args, stream)
    pace = RealTimeMonitor(model.config, model.weights.quant_type or "bf16")
    reported_drop = 0
    _note(args, "listening; Ctrl+C to stop")
    try:
        with mic:
            while True:
                chunk = mic.read(timeout=0.5)
                if recorder is not None and chunk.shape[0]:
                    recorder.write(chunk)
                started = time.perf_counter()
                for e in stream.feed(chunk) if gate is None else gate.feed(chunk):
                    writer.event(e) if e is not None else writer.pause()
                behind = pace.update(chunk.shape[0] / model.sample_rate, time.perf_counter() - started)
                if behind:
                    print(f"voxtral: warning: {behind}", file=sys.stderr, flush=True)
                if mic.dropped_samples > reported_drop:
                    reported_drop = mic.dropped_samples
                    print(
                        f"voxtral: warning: fell behind, dropped {mic.dropped_seconds:.2f} s of audio so far",
                        file=sys.stderr,
                        flush=True,
                    )
    except KeyboardInterrupt:
        interrupts.clear()  # Ctrl+C is how a microphone run ends: what follows is its last text
    finally:
        if recorder is not None:
            recorder.close()
    for e in stream.finish() if gate is None else gate.finish():
        writer.event(e) if e is not None else writer.pause()
    writer.end()
    if gate is not None:
        _note(
            args,
            f"decoded {gate.decoded_samples / model.sample_rate:.2f} s of speech in "
            f"{gate.pos / model.sample_rate:.2f} s captured",
        )
    if mic.dropped_samples:
        print(
            f"voxtral: warning: dropped {mic.dropped_seconds:.2f} s of "
            f"{mic.captured_samples / model.sample_rate:.2f} s captured",
            file=sys.stderr,
            flush=True,
        )
    return 0


def _speech_gate(args, stream):
    """--vad: only speech reaches the stream (None without it)."""
    if not args.vad:
        return None
    from .live_vad import SpeechGate
    from .vad import VadOptions

    return SpeechGate(stream, VadOptions(threshold=args.vad_threshold, silence_duration_ms=args.vad_silence_ms))


def list_devices() -> int:
    """Print the audio input devices (index, name, channels, default rate)."""
    from .errors import DeviceError

    try:
        import sounddevice as sd
    except OSError as exc:  # the wheel is there, the PortAudio library is not
        raise DeviceError(
            f"PortAudio is not installed ({exc}); install it (Debian/Ubuntu: apt install libportaudio2)"
        ) from None
    except ImportError:
        raise DeviceError(
            "listing microphones needs sounddevice (a dependency of voxtral): pip install sounddevice"
        ) from None
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}".replace("\n", " ")) from None
    inputs = [(i, d) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]
    if not inputs:
        raise DeviceError("no audio input device found")
    for i, d in inputs:
        mark = "*" if i == default_in else " "
        print(f"{mark} {i:3d}  {d['name']}  ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)")
    return 0


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.list_devices:
        return list_devices()
    from .model import load

    model = load(
        args.model,
        num_threads=args.threads,
        download=not args.no_download,
        quant=args.quant,
        kv_cache=args.kv_cache,
        on_status=lambda message: _note(args, message),
    )
    model.config.delay_tokens(args.delay_ms)  # the model's own step, should it differ
    try:
        return _run_model(args, model)
    finally:
        if args.verbose:
            e = model.engine
            print(
                f"voxtral: {e.tokens} decoder steps in {e.passes} passes ({e.tokens / max(1, e.passes):.2f} "
                f"steps per pass, {e.rows} rows computed)",
                file=sys.stderr,
            )
            for name, d in e.drafts.items():
                print(
                    f"voxtral: drafts by {name}: {d.accepted} of {d.drafted} rows accepted ({d.acceptance:.0%}), "
                    f"{d.wasted} wasted, in {d.proposals} steps",
                    file=sys.stderr,
                )


def _run_model(args: argparse.Namespace, model) -> int:
    progress = Progress(
        not args.quiet
        and sys.stderr.isatty()
        and (args.output is not None or args.output_dir is not None or not sys.stdout.isatty())
    )
    if args.output_dir is not None:
        return _run_files_to_dir(args, model, progress)

    try:
        if args.output is None:
            if sys.stdout is None:
                raise UsageError("standard output is closed; give -o FILE")
            return _run_to(args, model, sys.stdout, progress)[0]
        # -o FILE: the old file is replaced only if something was transcribed; an
        # interrupted run keeps what was decoded before the interruption.
        interrupted = None
        with AtomicOutput(args.output) as out:
            try:
                code, done = _run_to(args, model, out, progress)
            except KeyboardInterrupt as exc:
                interrupted, done = exc, 0
                if not out.written:
                    out.discard()
            if not done and interrupted is None:
                out.discard()
        if interrupted is not None:
            progress.clear()
            if not out.written:
                raise interrupted
            _note(args, f"interrupted; kept what was transcribed so far in {args.output}")
            raise Interrupted(*interrupted.args)
        if done:
            _note(args, f"wrote {args.output}")
        return code
    except KeyboardInterrupt:
        progress.clear()
        raise


def _run_to(args, model, out, progress: Progress) -> tuple[int, int]:
    """Transcribe the input to ``out``; returns (exit code, inputs done)."""
    writer = _Tracked(WRITERS[args.format](out))
    try:
        if args.mic:
            return _run_mic(args, model, writer), 1
        if args.stdin:
            return _run_stdin(args, model, writer), 1
        return _run_files(args, model, writer, progress)
    except KeyboardInterrupt:
        if writer.open:
            with _suppress_interrupts():
                writer.end()  # complete what was decoded (the last subtitle cue, the last line)
        raise
    finally:
        writer.close()


class _Tracked:
    """A writer that knows whether its current input was ended."""

    def __init__(self, writer):
        self.writer, self.open = writer, False

    def begin(self, source: str, multiple: bool) -> None:
        interrupts.check()
        self.writer.begin(source, multiple)
        self.open = True

    def event(self, e) -> None:
        interrupts.check()  # a Ctrl+C that Python dropped still ends the run here
        self.writer.event(e)

    def pause(self) -> None:  # --vad: a pause in speech breaks the line
        self.writer.pause()

    def end(self) -> None:
        self.open = False
        self.writer.end()

    def close(self) -> None:
        self.writer.close()


class Interrupted(KeyboardInterrupt):
    """An interrupted run whose partial transcript was kept (and said so)."""


class _suppress_interrupts:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, OSError, ValueError))


def _isatty(f) -> bool:
    try:
        return f is not None and f.isatty()
    except (ValueError, OSError):
        return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as our one-line messages, not '<frozen importlib...>: RuntimeWarning: ...'."""
    try:
        print(f"voxtral: warning: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def _fix_closed_streams() -> None:
    """``2>&-``: messages go nowhere instead of failing the run; ``>&-`` is refused in run()."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quantize"]:
        from .quantize import main as quantize_main

        return quantize_main(argv[1:])
    if argv[:1] == ["inspect"]:
        from .inspect import main as inspect_main

        return inspect_main(argv[1:])
    if argv[:1] == ["wyoming"]:  # python -m voxtral wyoming --uri ...: Home Assistant's protocol
        from .server.wyoming_server import main as wyoming_main

        return wyoming_main(argv[1:])
    if argv[:1] == ["serve"]:  # python -m voxtral serve ...: the server has its own options
        from .server.main import main as serve_main

        return serve_main(argv[1:])
    _fix_closed_streams()
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    interrupts.install()
    try:
        try:
            return run(args)
        finally:
            _flush_stdout()
    except VoxtralError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):
            # on its own line: after an unfinished transcript line, or over the terminal's "^C"
            start = ("\n" if _isatty(sys.stdout) else "\r") if _isatty(sys.stderr) else ""
            print(f"{start}voxtral: interrupted", file=sys.stderr)
        return interrupts.exit_code(exc)
    except BrokenPipeError:
        # Output closed early (e.g. piped into `head`): not an error of ours.
        _quiet_stdout()
        return 0
    except OSError as exc:  # stdout on a full disk, /dev/full, a device error
        _quiet_stdout()
        _error(f"cannot write the transcript: {exc.strerror or exc}")
        return 1


def _flush_stdout() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _quiet_stdout() -> None:
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass
