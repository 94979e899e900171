"""The browser page at ``GET /``: plain HTML/JS/CSS from ``static/`` (no build
step, no CDN), the microphone through an AudioWorklet onto the realtime
WebSocket like any client, and a file upload onto /v1/audio/transcriptions.

Browsers cannot put an ``Authorization`` header on a WebSocket; the page
offers the key as the subprotocol ``openai-insecure-api-key.KEY`` (OpenAI's
convention for browsers) next to ``realtime``, which the server accepts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..config import MAX_DELAY_MS, MIN_DELAY_MS

STATIC = Path(__file__).resolve().parent / "static"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
SUBPROTOCOL = "realtime"


def is_public(path: str) -> bool:
    """The page and its files need no key (they hold no data); what they call does."""
    return path in ("/", "/page/config") or path.startswith("/static/")


def mount(app, cfg, model) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/page/config", include_in_schema=False)
    async def page_config():
        return {
            "model": cfg.model_names[0],
            "sample_rate": model.sample_rate,
            "auth_required": cfg.api_key is not None,
            "delay": {
                "min": MIN_DELAY_MS,
                "max": MAX_DELAY_MS,
                "step": model.config.audio.samples_per_token * 1000 // model.sample_rate,
                "default": (cfg.settings.options or model.options).delay_ms,
            },
        }


def ws_authorization(ws) -> str | None:
    """The Authorization header, or a browser's key subprotocol as one."""
    header = ws.headers.get("authorization")
    if header:
        return header
    for proto in ws.scope.get("subprotocols", []):
        if proto.startswith(KEY_SUBPROTOCOL):
            return "Bearer " + proto[len(KEY_SUBPROTOCOL) :]
    return None


def ws_subprotocol(ws) -> str | None:
    """The subprotocol to accept: ``realtime`` when the client offers it (a browser
    that offers subprotocols fails the handshake unless one is chosen)."""
    return SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", []) else None
