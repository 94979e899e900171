"""The HTTP server around the app: uvicorn with the limits uvicorn lacks.

uvicorn times out a keep-alive connection between requests but not a client
that never finishes its request line and headers (slowloris), nor a body that
trickles in a byte at a time, and it accepts any number of connections. The
protocol below adds a deadline for each request's headers, a minimum body
rate and a connection limit; the server class ends sessions within a bounded
grace period on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("voxtral.server")


@dataclass
class HttpLimits:
    header_timeout_seconds: float = 10.0  # request line and headers, from the first byte or the last response
    min_body_bytes_per_second: int = 1024  # averaged over each header_timeout window
    max_connections: int = 256
    shutdown_grace_seconds: float = 10.0


def _limited_protocol(limits: HttpLimits) -> type:
    class LimitedH11Protocol(H11Protocol):
        """uvicorn's HTTP/1.1 protocol with a header deadline, a body rate and a connection cap."""

        _voxtral_timer: asyncio.TimerHandle | None = None
        _voxtral_window_bytes = 0

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("connection refused: %d connections open (--max-connections)", len(self.connections) - 1)
                transport.abort()
                return
            self._voxtral_arm()

        def _voxtral_arm(self) -> None:
            if self._voxtral_timer is not None:
                self._voxtral_timer.cancel()
            self._voxtral_window_bytes = 0
            self._voxtral_timer = self.loop.call_later(limits.header_timeout_seconds, self._voxtral_check)

        def _voxtral_check(self) -> None:
            self._voxtral_timer = None
            if self.transport is None or self.transport.is_closing():
                return
            if self.transport.get_protocol() is not self:
                return  # upgraded to a WebSocket: the session's own limits (idle, audio, backlog) apply
            state = self.conn.their_state
            if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                reason = "no complete request headers"
            elif (
                state is h11.SEND_BODY
                and self._voxtral_window_bytes < limits.min_body_bytes_per_second * limits.header_timeout_seconds
            ):
                reason = "request body slower than the minimum rate"
            elif state in (h11.IDLE, h11.SEND_BODY):
                self._voxtral_arm()
                return
            else:
                return  # the request is complete (or upgraded): the app's own timeouts apply
            log.info("closing %s: %s within %g s", self.client, reason, limits.header_timeout_seconds)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._voxtral_window_bytes += len(data)
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._voxtral_arm()  # the next request's headers get their own deadline

        def connection_lost(self, exc) -> None:
            if self._voxtral_timer is not None:
                self._voxtral_timer.cancel()
                self._voxtral_timer = None
            super().connection_lost(exc)

    return LimitedH11Protocol


class VoxtralServer(uvicorn.Server):
    """On shutdown, open sessions may finish for ``shutdown_grace_seconds``;
    then each gets an ``error`` event and is closed."""

    def __init__(self, config: uvicorn.Config, app, grace_seconds: float):
        super().__init__(config)
        self.voxtral_app = app
        self.grace_seconds = grace_seconds

    async def shutdown(self, sockets=None) -> None:
        manager = getattr(self.voxtral_app.state, "manager", None)
        if manager is not None:
            for server in self.servers:
                server.close()  # no new connections while sessions finish
            await manager_end_sessions(manager, self.grace_seconds)
        await super().shutdown(sockets=sockets)


async def manager_end_sessions(manager, grace_seconds: float) -> None:
    from . import protocol

    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while manager.sessions and loop.time() < deadline:
        await asyncio.sleep(0.05)
    left = list(manager.sessions.values())
    for session in left:
        manager.kill(session, protocol.SHUTTING_DOWN, "the server is shutting down")
    if left:
        await asyncio.sleep(0.2)  # let the connections send that error and close


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads (a bind failure is
    reported at once, not after minutes of loading)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build_server(
    app, *, host: str, port: int, limits: HttpLimits, max_message_bytes: int, log_level: str = "info"
) -> VoxtralServer:
    # uvicorn refuses frames past ws_max_size (close 1009); ours answers with an error event
    # below that, so uvicorn's bound only stops what is far too big to even read. No
    # permessage-deflate: a 1 KB compressed frame would be a 1 MB message.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_limited_protocol(limits),
        ws_max_size=2 * max_message_bytes + 4096,
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=max(1, int(limits.shutdown_grace_seconds)),
    )
    return VoxtralServer(config, app, limits.shutdown_grace_seconds)
