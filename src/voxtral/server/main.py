"""``python -m voxtral serve``: command line of the server."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

from ..config import DEFAULT_DELAY_MS
from ..errors import BindError, UsageError, VoxtralError
from ..modes import KV_DTYPES, QTYPES
from ..options import Options, add_draft_arguments
from .sessions import Settings

API_KEY_ENV = "VOXTRAL_API_KEY"
MAX_AUDIO_SECONDS = 3600.0
DECODE_THREADS = 2


def _http_defaults():
    from .transport import HttpLimits  # uvicorn: only with the serve extra

    return HttpLimits()


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="voxtral serve",
        description="Realtime transcription server: vLLM's /v1/realtime WebSocket protocol, OpenAI's "
        "/v1/audio/transcriptions, /health, /v1/models, /metrics.",
    )
    p.add_argument(
        "--model", metavar="DIR", help="model directory or Hugging Face repo id (default: $VOXTRAL_MODEL_DIR)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1..65535 (default 8000)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every endpoint but /health; a key given here "
        f"shows in the process list: prefer ${API_KEY_ENV} or --api-key-file",
    )
    p.add_argument("--api-key-file", metavar="FILE", default=None, help="read the API key from FILE (its first line)")
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web page origin (e.g. https://app.example) allowed to call the server from a browser "
        "(repeatable; '*' for any); other cross-origin requests are refused with 403",
    )
    p.add_argument(
        "--served-model-name",
        action="append",
        default=None,
        metavar="NAME",
        help="model name(s) clients may ask for (repeatable; default: "
        "mistralai/Voxtral-Mini-4B-Realtime-2602 and the model directory's name)",
    )
    p.add_argument(
        "--delay-ms",
        type=int,
        default=DEFAULT_DELAY_MS,
        help=f"default transcription delay (default {DEFAULT_DELAY_MS}); sessions may change it",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    p.add_argument(
        "--quant",
        default=None,
        metavar="{" + ",".join(QTYPES) + "}",
        help="serve the weights quantized to this type (quantized once into a cache, as the CLI's --quant)",
    )
    p.add_argument(
        "--kv-cache",
        default="f32",
        metavar="{" + ",".join(KV_DTYPES) + "}",
        help="KV cache storage of every session (default f32, exact)",
    )
    add_draft_arguments(p, shown_by="/metrics")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help=f"default {d.max_sessions}")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        help=f"largest WebSocket message (default {d.max_message_bytes})",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=int,
        default=d.max_upload_bytes,
        help=f"largest HTTP upload, refused on its Content-Length or as it arrives (default {d.max_upload_bytes})",
    )
    p.add_argument(
        "--max-audio-seconds",
        type=float,
        default=MAX_AUDIO_SECONDS,
        help=f"longest decoded audio of one upload, checked while decoding (default {MAX_AUDIO_SECONDS:g})",
    )
    p.add_argument(
        "--decode-threads",
        type=int,
        default=DECODE_THREADS,
        help=f"uploads decoded at once, in a pool apart from the model's (default {DECODE_THREADS})",
    )
    p.add_argument(
        "--max-pending-bytes",
        type=int,
        default=d.max_pending_bytes,
        help="events waiting to be sent to one client; a client that does not read is cut off past it "
        f"(default {d.max_pending_bytes})",
    )
    h = _http_defaults()
    p.add_argument(
        "--header-timeout",
        type=float,
        default=h.header_timeout_seconds,
        help="seconds for a request line and headers (also a WebSocket handshake) to arrive; a request "
        f"body must arrive at {h.min_body_bytes_per_second} bytes/s or more over each such period "
        f"(default {h.header_timeout_seconds:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=h.max_connections,
        help=f"open TCP connections; more are closed at once (default {h.max_connections})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=h.shutdown_grace_seconds,
        help="on SIGTERM/SIGINT, seconds open sessions may finish; then each gets an error event "
        f"and is closed (default {h.shutdown_grace_seconds:g})",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout_seconds,
        help=f"seconds without a message before a session is closed (default {d.idle_timeout_seconds:g})",
    )
    p.add_argument(
        "--max-backlog",
        type=float,
        default=d.max_backlog_seconds,
        help="seconds of a session's audio waiting to be decoded before further audio is refused "
        f"(default {d.max_backlog_seconds:g})",
    )
    p.add_argument("--no-download", action="store_true", help="only use local model files")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def settings_from(args) -> Settings:
    for name in (
        "max_sessions",
        "max_message_bytes",
        "max_upload_bytes",
        "max_pending_bytes",
        "decode_threads",
        "max_connections",
    ):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("idle_timeout", "max_backlog", "max_audio_seconds", "header_timeout"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if not args.shutdown_grace >= 0:
        raise UsageError("--shutdown-grace must be >= 0")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    return Settings(
        max_sessions=args.max_sessions,
        max_message_bytes=args.max_message_bytes,
        max_upload_bytes=args.max_upload_bytes,
        idle_timeout_seconds=args.idle_timeout,
        max_backlog_seconds=args.max_backlog,
        max_pending_bytes=args.max_pending_bytes,
        options=Options(delay_ms=args.delay_ms, kv_cache=args.kv_cache).replace(
            draft_steps=args.draft_steps, drafts=args.drafts
        ),
    )


def api_key_from(args) -> str | None:
    """--api-key, else --api-key-file, else $VOXTRAL_API_KEY; an empty key is refused, never 'no auth'."""
    if args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--api-key-file {args.api_key_file}: cannot read ({exc})") from None
        source = f"--api-key-file {args.api_key_file}"
    elif API_KEY_ENV in os.environ:
        key, source = os.environ[API_KEY_ENV], f"${API_KEY_ENV}"
    else:
        return None
    if not key.strip():
        raise UsageError(f"{source} is empty; give a key, or none at all to serve without authentication")
    return key.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int):
    from .transport import bind

    try:
        return bind(host, port)
    except OSError as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def model_names(args, model) -> list[str]:
    if args.served_model_name:
        return list(args.served_model_name)
    return ["mistralai/Voxtral-Mini-4B-Realtime-2602", model.model_dir.name]


def run(args) -> int:
    try:
        from .app import ServerConfig, create_app
    except ImportError as exc:
        raise UsageError(f"the server needs its extra: pip install 'voxtral[serve]' ({exc})") from None
    from ..model import load
    from .transport import HttpLimits, build_server

    settings = settings_from(args)
    api_key = api_key_from(args)
    sock = listen(args.host, args.port)  # before minutes of loading: a bad port fails at once
    if api_key is None and not _is_loopback(args.host):
        print(
            f"voxtral serve: warning: listening on {args.host} without an API key: anyone who can reach it "
            f"can use it (set ${API_KEY_ENV} or --api-key-file)",
            file=sys.stderr,
            flush=True,
        )
    try:
        model = load(
            args.model,
            num_threads=args.threads,
            download=not args.no_download,
            quant=args.quant,
            kv_cache=args.kv_cache,
        )
        model.config.delay_tokens(args.delay_ms)  # validate before serving
        cfg = ServerConfig(
            model_names=model_names(args, model),
            api_key=api_key,
            settings=settings,
            max_audio_seconds=args.max_audio_seconds,
            decode_threads=args.decode_threads,
            allow_origins=tuple(args.allow_origin),
        )
        limits = HttpLimits(
            header_timeout_seconds=args.header_timeout,
            max_connections=args.max_connections,
            shutdown_grace_seconds=args.shutdown_grace,
        )
        server = build_server(
            create_app(model, cfg),
            host=args.host,
            port=args.port,
            limits=limits,
            max_message_bytes=settings.max_message_bytes,
            log_level=args.log_level,
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ImportError as exc:
        print(
            f"voxtral serve: error: the server needs its extra: pip install 'voxtral[serve]' ({exc})", file=sys.stderr
        )
        return UsageError.exit_code
    args = parser.parse_args(argv)
    try:
        return run(args)
    except VoxtralError as exc:
        print(f"voxtral serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
