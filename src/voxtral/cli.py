"""Command line: ``python -m voxtral FILE.wav`` prints the transcript as it is
decoded; ``--stdin`` and ``--mic`` transcribe live input."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Iterable, Sequence

from . import __version__
from .config import DEFAULT_DELAY_MS, MAX_DELAY_MS, MIN_DELAY_MS
from .errors import UsageError, VoxtralError
from .formats import WRITERS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voxtral",
        description="Transcribe speech with Voxtral Mini 4B Realtime on the CPU. "
        "Text is printed as it is decoded.",
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument("files", nargs="*", metavar="FILE", help="audio files (WAV: PCM 8/16/24/32-bit or float, any rate)")
    src.add_argument("--stdin", action="store_true", help="read audio from standard input: WAV (detected by its header) or raw PCM")
    src.add_argument("--mic", action="store_true", help="capture the default input device (or --device) until Ctrl+C")
    src.add_argument("--device", metavar="NAME", help="input device name or index for --mic")
    src.add_argument("--record", metavar="FILE", help="with --mic: save the captured audio as a WAV file")
    src.add_argument("--raw-format", default="s16le", help="raw PCM format on stdin (default s16le)")
    src.add_argument("--raw-rate", type=int, default=16000, help="raw PCM sample rate on stdin (default 16000)")
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
        help=f"transcription delay, {MIN_DELAY_MS}..{MAX_DELAY_MS} in steps of 80 (default {DEFAULT_DELAY_MS}); "
        "longer is more accurate",
    )
    p.add_argument("--format", choices=tuple(WRITERS), default="text",
                   help="output: text, jsonl (one object per token), srt or vtt subtitles (default text)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the transcript to FILE instead of stdout")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: $VOXTRAL_NUM_THREADS or physical cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or status messages on stderr")
    p.add_argument("--no-download", action="store_true", help="never download the model, only use local files")
    p.add_argument("--version", action="version", version=f"voxtral {__version__}")
    return p


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal that
    the transcript itself does not go to."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last = 0.0

    def show(self, name: str, done: float, total: float) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{name[-30:]:>30} [{bar:<30}] {done:6.1f}/{total:.1f} s")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def _note(args, message: str) -> None:
    if not args.quiet:
        print(f"voxtral: {message}", file=sys.stderr, flush=True)


def _feed_all(stream, chunks: Iterable, writer) -> None:
    for chunk in chunks:
        for e in stream.feed(chunk):
            writer.event(e)


def _finish(stream, writer) -> None:
    for e in stream.finish():
        writer.event(e)
    writer.end()


def _run_files(args, model, writer, progress: Progress) -> None:
    for path in args.files:
        writer.begin(path, len(args.files) > 1)
        name = os.path.basename(path)
        for e in model.transcribe_iter(path, delay_ms=args.delay_ms,
                                       on_progress=lambda done, total: progress.show(name, done, total)):
            writer.event(e)
        writer.end()
    progress.clear()


def _run_stdin(args, model, writer) -> None:
    from .live import read_pcm_stream

    writer.begin("<stdin>", False)
    stream = model.stream(args.delay_ms)
    try:
        _feed_all(stream, read_pcm_stream(sys.stdin.buffer, model.sample_rate, args.raw_format, args.raw_rate), writer)
    finally:
        if stream.samples_in:
            _finish(stream, writer)


def _run_mic(args, model, writer) -> None:
    from .live import Microphone, WavRecorder

    device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
    mic = Microphone(model.sample_rate, device=device)
    recorder = WavRecorder(args.record, model.sample_rate) if args.record else None
    writer.begin("<mic>", False)
    stream = model.stream(args.delay_ms)
    reported_drop = 0
    _note(args, "listening; Ctrl+C to stop")
    try:
        with mic:
            while True:
                chunk = mic.read(timeout=0.5)
                if recorder is not None and chunk.shape[0]:
                    recorder.write(chunk)
                for e in stream.feed(chunk):
                    writer.event(e)
                if mic.dropped_samples > reported_drop:
                    reported_drop = mic.dropped_samples
                    print(f"voxtral: warning: fell behind, dropped {mic.dropped_seconds:.2f} s of audio so far",
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if recorder is not None:
            recorder.close()
    _finish(stream, writer)
    if mic.dropped_samples:
        print(f"voxtral: warning: dropped {mic.dropped_seconds:.2f} s of "
              f"{mic.captured_samples / model.sample_rate:.2f} s captured", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from .model import load

    sources = bool(args.files) + args.stdin + args.mic
    if sources == 0:
        raise UsageError("no input: give audio FILEs, --stdin or --mic")
    if sources > 1:
        raise UsageError("choose one input: FILEs, --stdin or --mic")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if args.record and not args.mic:
        raise UsageError("--record goes with --mic")
    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    model = load(args.model, num_threads=args.threads, download=not args.no_download)
    model.config.delay_tokens(args.delay_ms)  # validate before any work

    out = sys.stdout
    if args.output:
        try:
            out = open(args.output, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write ({exc.strerror})") from None
    writer = WRITERS[args.format](out)
    progress = Progress(not args.quiet and sys.stderr.isatty() and (args.output is not None or not sys.stdout.isatty()))
    try:
        if args.mic:
            _run_mic(args, model, writer)
        elif args.stdin:
            _run_stdin(args, model, writer)
        else:
            _run_files(args, model, writer, progress)
    finally:
        writer.close()
        if out is not sys.stdout:
            out.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # python -m voxtral serve ...: the server has its own options
        from .server.main import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except VoxtralError as exc:
        print(f"voxtral: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("voxtral: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output closed early (e.g. piped into `head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
