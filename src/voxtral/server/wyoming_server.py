"""``python -m voxtral wyoming --uri tcp://127.0.0.1:10300``: the Wyoming
protocol (Home Assistant's voice pipeline), through the ``wyoming`` package's
own server and event framing.

``describe`` -> ``info`` (an ASR program with this model, transcript
streaming supported); ``transcribe`` (optional), ``audio-start``,
``audio-chunk``..., ``audio-stop`` -> ``transcript-start``, ``transcript-chunk``
as tokens are decoded, then ``transcript`` and ``transcript-stop``. Every
utterance is a ``SessionManager`` session: the same batch engine, limits and
model options as ``serve`` (``--max-sessions``, ``--max-backlog``, ``--idle-timeout``,
``--max-message-bytes`` for an audio chunk, ``--quant``, ``--kv-cache``, ``--threads``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from functools import partial

from .. import __version__
from ..audio import Resampler, SampleFormat, pcm_bytes_to_float
from ..errors import UsageError, VoxtralError
from . import protocol
from .metrics import Metrics
from .sessions import CLOSE, SessionManager, Settings, TooManySessions

# The model card's languages (FLEURS): Wyoming clients pick a program by language.
LANGUAGES = ["en", "fr", "es", "de", "ru", "zh", "ja", "it", "pt", "nl", "ar", "hi", "ko"]
MODEL_URL = "https://huggingface.co/mistralai/Voxtral-Mini-4B-Realtime-2602"


def info_event(names: list[str]):
    from wyoming.info import AsrModel, AsrProgram, Attribution, Info

    attribution = Attribution(name="Mistral AI", url=MODEL_URL)
    model = AsrModel(
        name=names[0],
        attribution=attribution,
        installed=True,
        languages=LANGUAGES,
        description="Voxtral Mini 4B Realtime (streaming speech-to-text)",
        version=None,
    )
    program = AsrProgram(
        name="voxtral",
        attribution=Attribution(name="voxtral", url=MODEL_URL),
        installed=True,
        description="Voxtral Mini 4B Realtime on the CPU",
        version=__version__,
        models=[model],
        supports_transcript_streaming=True,
    )
    return Info(asr=[program]).event()


def _handler_class():
    from wyoming.server import AsyncEventHandler

    class Handler(AsyncEventHandler):
        """One client connection: utterances one after another."""

        def __init__(self, reader, writer, manager: SessionManager, names: list[str]):
            super().__init__(reader, writer)
            self.manager, self.names = manager, names
            self.settings = manager.settings
            self.session = None
            self.pump: asyncio.Task | None = None
            self.language: str | None = None
            self.format: SampleFormat | None = None
            self.leftover = b""
            self.last_event = asyncio.get_running_loop().time()
            self.watchdog = asyncio.get_running_loop().create_task(self._idle_watch())

        async def handle_event(self, event) -> bool:
            from wyoming.asr import Transcribe
            from wyoming.audio import AudioChunk, AudioStart, AudioStop
            from wyoming.info import Describe

            self.last_event = asyncio.get_running_loop().time()
            try:
                if Describe.is_type(event.type):
                    await self.write_event(info_event(self.names))
                elif Transcribe.is_type(event.type):
                    self.language = Transcribe.from_event(event).language
                elif AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    await self._begin(start.rate, start.width, start.channels)
                elif AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    if len(chunk.audio) > self.settings.max_message_bytes:
                        raise protocol.ProtocolError(
                            f"audio chunk of {len(chunk.audio)} bytes is over the limit of "
                            f"{self.settings.max_message_bytes}",
                            protocol.MESSAGE_TOO_LARGE,
                        )
                    if self.session is None:  # audio-start is optional in practice: take the chunk's format
                        await self._begin(chunk.rate, chunk.width, chunk.channels)
                    self._audio(chunk.audio)
                elif AudioStop.is_type(event.type):
                    await self._end()
            except protocol.ProtocolError as exc:
                await self._fail(str(exc), exc.code)
            except VoxtralError as exc:
                await self._fail(str(exc), protocol.INVALID_AUDIO)
            return True

        async def _fail(self, message: str, code: str) -> None:
            from wyoming.error import Error

            self.manager.metrics.error(code)
            await self.write_event(Error(text=message, code=code).event())

        async def _begin(self, rate: int, width: int, channels: int) -> None:
            if self.session is not None:  # a new audio-start: the previous utterance is over
                await self._end()
            if width not in (2, 3, 4) or not 1 <= channels <= 64:
                raise protocol.ProtocolError(
                    f"unsupported audio: width {width}, channels {channels}", protocol.INVALID_AUDIO
                )
            self.format = SampleFormat("int", 8 * width, channels)
            self.resample = Resampler(rate, self.manager.rate)
            try:
                self.session = self.manager.open("wyoming")
            except TooManySessions as exc:
                raise protocol.ProtocolError(str(exc), protocol.TOO_MANY_SESSIONS) from None
            self.manager.commit(self.session, final=False)
            self.leftover = b""
            self.pump = asyncio.get_running_loop().create_task(self._events(self.session))

        def _audio(self, data: bytes) -> None:
            data = self.leftover + data
            usable = len(data) - len(data) % self.format.frame_bytes
            self.leftover = data[usable:]
            if usable:
                x = self.resample(pcm_bytes_to_float(data[:usable], self.format, name="audio-chunk"))
                if x.shape[0]:
                    self.manager.append(self.session, x)

        async def _end(self) -> None:
            if self.session is None:
                return
            tail = self.resample(pcm_bytes_to_float(b"", self.format), last=True)
            if tail.shape[0]:
                self.manager.append(self.session, tail, limit_backlog=False)
            self.manager.commit(self.session, final=True)
            session, pump, self.session, self.pump = self.session, self.pump, None, None
            try:
                await pump  # the transcript goes out before the next event is read
            finally:
                self.manager.close(session)

        async def _events(self, session) -> None:
            from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop

            started = False
            while True:
                event = await session.outbox.get()
                if event is CLOSE:
                    return
                kind = event["type"]
                if kind == "transcription.delta" and event["delta"]:
                    if not started:
                        started = True
                        await self.write_event(TranscriptStart(language=self.language).event())
                    await self.write_event(TranscriptChunk(text=event["delta"]).event())
                elif kind == "transcription.done":
                    if not started:
                        await self.write_event(TranscriptStart(language=self.language).event())
                    await self.write_event(Transcript(text=event["text"], language=self.language).event())
                    await self.write_event(TranscriptStop().event())
                    return
                elif kind == "error":
                    await self._fail(event["error"], event["code"])
                    return

        async def _idle_watch(self) -> None:
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.sleep(min(1.0, self.settings.idle_timeout_seconds))
                if self.session is None and loop.time() - self.last_event > self.settings.idle_timeout_seconds:
                    self.manager.metrics.error(protocol.IDLE_TIMEOUT)
                    await self.stop()
                    return

        async def disconnect(self) -> None:
            self.watchdog.cancel()
            if self.pump is not None:
                self.pump.cancel()
            if self.session is not None:
                self.manager.close(self.session)
                self.session = None

    return Handler


async def serve(model, uri: str, settings: Settings, names: list[str], started: asyncio.Event | None = None) -> None:
    """Serve Wyoming on ``uri`` until cancelled (or SIGINT/SIGTERM)."""
    from wyoming.server import AsyncServer

    try:
        server = AsyncServer.from_uri(uri)
    except ValueError as exc:
        raise UsageError(f"--uri: {exc}") from None
    manager = SessionManager(model, settings, Metrics())
    manager.start()
    try:
        await server.start(partial(_handler_class(), manager=manager, names=names))
        if started is not None:
            started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    finally:
        await server.stop()
        await manager.stop()


def build_parser() -> argparse.ArgumentParser:
    from .main import build_parser as serve_parser

    p = serve_parser()  # the model and limit options of `serve`, one definition
    p.prog = "voxtral wyoming"
    p.description = "Wyoming protocol ASR server (Home Assistant): describe/info, transcribe, audio -> transcript."
    p.add_argument(
        "--uri",
        default="tcp://127.0.0.1:10300",
        help="where to listen: tcp://HOST:PORT or unix://PATH (default tcp://127.0.0.1:10300)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .main import model_names, settings_from

    args = build_parser().parse_args(argv)
    try:
        try:
            import wyoming  # noqa: F401
        except ImportError:
            raise UsageError("the Wyoming server needs its extra: pip install 'voxtral[wyoming]'") from None
        if args.api_key:
            raise UsageError("Wyoming has no authentication: bind --uri to this machine or a trusted network")
        from ..model import load

        settings = settings_from(args)
        model = load(
            args.model,
            num_threads=args.threads,
            download=not args.no_download,
            quant=args.quant,
            kv_cache=args.kv_cache,
        )
        model.config.delay_tokens(args.delay_ms)
        print(f"voxtral wyoming: listening on {args.uri}", file=sys.stderr, flush=True)
        asyncio.run(serve(model, args.uri, settings, model_names(args, model)))
    except VoxtralError as exc:
        print(f"voxtral wyoming: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0
