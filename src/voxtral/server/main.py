"""``python -m voxtral serve``: command line of the server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..modes import KV_DTYPES, QTYPES
from ..config import DEFAULT_DELAY_MS
from ..errors import UsageError, VoxtralError
from ..options import Options
from .sessions import Settings

API_KEY_ENV = "VOXTRAL_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="voxtral serve",
        description="Realtime transcription server: vLLM's /v1/realtime WebSocket protocol, OpenAI's "
        "/v1/audio/transcriptions, /health, /v1/models, /metrics.",
    )
    p.add_argument("--model", metavar="DIR",
                   help="model directory or Hugging Face repo id (default: $VOXTRAL_MODEL_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (default: ${API_KEY_ENV})")
    p.add_argument("--served-model-name", action="append", default=None, metavar="NAME",
                   help="model name(s) clients may ask for (repeatable; default: "
                   "mistralai/Voxtral-Mini-4B-Realtime-2602 and the model directory's name)")
    p.add_argument("--delay-ms", type=int, default=DEFAULT_DELAY_MS,
                   help=f"default transcription delay (default {DEFAULT_DELAY_MS}); sessions may change it")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    p.add_argument("--quant", default=None, metavar="{" + ",".join(QTYPES) + "}",
                   help="serve the weights quantized to this type (quantized once into a cache, as the CLI's --quant)")
    p.add_argument("--kv-cache", default="f32", metavar="{" + ",".join(KV_DTYPES) + "}",
                   help="KV cache storage of every session (default f32, exact)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help=f"default {d.max_sessions}")
    p.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                   help=f"largest WebSocket message (default {d.max_message_bytes})")
    p.add_argument("--max-upload-bytes", type=int, default=d.max_upload_bytes,
                   help=f"largest HTTP upload (default {d.max_upload_bytes})")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout_seconds,
                   help=f"seconds without a message before a session is closed (default {d.idle_timeout_seconds:g})")
    p.add_argument("--max-backlog", type=float, default=d.max_backlog_seconds,
                   help="seconds of a session's audio waiting to be decoded before further audio is refused "
                   f"(default {d.max_backlog_seconds:g})")
    p.add_argument("--no-download", action="store_true", help="only use local model files")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def settings_from(args) -> Settings:
    for name in ("max_sessions", "max_message_bytes", "max_upload_bytes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.idle_timeout <= 0 or args.max_backlog <= 0:
        raise UsageError("--idle-timeout and --max-backlog must be positive")
    return Settings(max_sessions=args.max_sessions, max_message_bytes=args.max_message_bytes,
                    max_upload_bytes=args.max_upload_bytes, idle_timeout_seconds=args.idle_timeout,
                    max_backlog_seconds=args.max_backlog,
                    options=Options(delay_ms=args.delay_ms, kv_cache=args.kv_cache))


def model_names(args, model) -> list[str]:
    if args.served_model_name:
        return list(args.served_model_name)
    return ["mistralai/Voxtral-Mini-4B-Realtime-2602", model.model_dir.name]


def run(args) -> int:
    try:
        import uvicorn

        from .app import ServerConfig, create_app
    except ImportError as exc:
        raise UsageError(f"the server needs its extra: pip install 'voxtral[serve]' ({exc})") from None
    from ..model import load

    settings = settings_from(args)
    model = load(args.model, num_threads=args.threads, download=not args.no_download, quant=args.quant,
                 kv_cache=args.kv_cache)
    model.config.delay_tokens(args.delay_ms)  # validate before serving
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    cfg = ServerConfig(model_names=model_names(args, model), api_key=api_key, settings=settings)
    app = create_app(model, cfg)
    # uvicorn refuses frames past ws_max_size (close 1009); ours answers with an error event
    # below that, so uvicorn's bound only stops what is far too big to even read.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                ws_max_size=2 * settings.max_message_bytes + 4096, ws_ping_interval=20.0, ws_ping_timeout=20.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except VoxtralError as exc:
        print(f"voxtral serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
