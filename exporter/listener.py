"""The listening socket, guarded against idle and slow clients before aiohttp reads a byte.

Go servers bound a request's headers in time (`ReadHeaderTimeout`); aiohttp does not, and it
accepts connections until the process runs out of file descriptors. Here every connection
is counted and wrapped:

- a request's headers must arrive within the header timeout, counted from the connection's
  start or from the first byte of its next request (a TLS handshake gets as long);
- at most `max_connections` are open; at the cap, the connection that has waited longest
  without a request in progress (keep-alive idle, or still sending headers) is closed to
  make room, so a flood of slow clients cannot lock out a scrape; when every connection is
  serving a request, the new one is closed at once, before anything is read.
"""

import asyncio
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLOSE_REASONS = ("limit", "evicted", "header_timeout")
# An idle keep-alive connection is closed after this (aiohttp's default is an hour).
KEEPALIVE_TIMEOUT = 120.0


@dataclass
class Guard:
    """Connection limits of the HTTP server and what they did."""

    max_connections: int
    header_timeout: float
    open: int = 0
    closed: Counter[str] = field(default_factory=Counter)
    # Connections without a request in progress, the longest waiting first.
    _waiting: OrderedDict["GuardedProtocol", None] = field(default_factory=OrderedDict)

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], Any]:
        """A protocol factory wrapping `inner` (aiohttp's) in the guard."""
        return lambda: GuardedProtocol(self, inner)

    def admit(self) -> bool:
        """Room for one more connection: at the cap, the longest-waiting one is closed."""
        if self.open >= self.max_connections:
            if not self._waiting:
                self.closed["limit"] += 1
                return False
            oldest = next(iter(self._waiting))
            oldest.close("evicted")
        self.open += 1
        return True

    def waiting(self, protocol: "GuardedProtocol", waits: bool) -> None:
        """Note whether a connection is waiting for a request (evictable) or serving one."""
        if waits:
            self._waiting[protocol] = None
            self._waiting.move_to_end(protocol)
        else:
            self._waiting.pop(protocol, None)

    def gone(self, protocol: "GuardedProtocol") -> None:
        """A counted connection closed."""
        self.open -= 1
        self._waiting.pop(protocol, None)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's count and header timer."""

    def __init__(self, guard: Guard, inner: Callable[[], asyncio.BaseProtocol]) -> None:
        self._guard, self._make = guard, inner
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._bytes_while_busy = False
        self._counted = False  # in the guard's count of open connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection or close it before reading."""
        self._transport = transport  # type: ignore[assignment]
        if not self._guard.admit():
            transport.abort()  # type: ignore[attr-defined]
            return
        self._counted = True
        self._inner = self._make()
        self._inner.connection_made(transport)
        self._guard.waiting(self, True)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Pass bytes on; the first of a request starts its header timer."""
        if self._inner is None or not self._counted:
            return  # refused, or closed by us a loop turn before asyncio reports it
        if self._busy:
            self._bytes_while_busy = True
        elif self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Pass the end of input on."""
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        """Uncount the connection and tell aiohttp."""
        self._disarm()
        self._uncount()
        if self._inner is None:
            return
        self._inner.connection_lost(exc)
        self._inner = None

    def pause_writing(self) -> None:
        """Flow control, passed on."""
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Flow control, passed on."""
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        """Headers arrived whole: the timer stops, and the connection is not evictable."""
        self._disarm()
        self._busy = True
        self._guard.waiting(self, False)

    def request_finished(self) -> None:
        """Back to waiting; bytes that came meanwhile are a request already under way."""
        self._busy = False
        if self._inner is None or not self._counted:
            # Closed by us (evicted, timed out) and asyncio has not reported the loss yet:
            # put back among the evictable, it could be evicted again, freeing no room, and
            # the open count would pass the cap.
            return
        self._guard.waiting(self, True)
        if self._bytes_while_busy:
            self._bytes_while_busy = False
            self._arm()

    def close(self, reason: str) -> None:
        """Close at once (no TLS goodbye a slow peer could stretch), counting why."""
        self._guard.closed[reason] += 1
        self._guard.waiting(self, False)
        self._disarm()
        if self._transport is not None:
            self._transport.abort()
        # Uncounted now, not when asyncio reports the loss a loop turn later: a burst of
        # connections evicting others read over the cap in between (530 of 512).
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.gone(self)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout, self.close, "header_timeout")

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard when a request starts (headers in) and ends."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if not isinstance(protocol, GuardedProtocol):
        return await handler(request)
    protocol.request_started()
    try:
        return await handler(request)
    finally:
        protocol.request_finished()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a Guard, with the TLS handshake timed too."""

    __slots__ = ("_guard", "_host", "_port", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        guard: Guard,
        ssl_context: ssl.SSLContext | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=128)
        self._host, self._port, self._guard = host, port, guard
        self._sock = sock  # a socket already listening (systemd's), instead of host and port

    @property
    def name(self) -> str:
        """The address, as aiohttp names sites."""
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (what port 0 became)."""
        sockets = getattr(self._server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        """Listen."""
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner is set up before sites start
        handshake = self._guard.header_timeout if self._ssl_context is not None else None
        loop, factory = asyncio.get_running_loop(), self._guard.factory(server)
        if self._sock is not None:  # systemd's, already bound and listening
            self._server = await loop.create_server(
                factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
                ssl_handshake_timeout=handshake,
            )  # fmt: skip
            return
        self._server = await loop.create_server(
            factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=handshake,
        )  # fmt: skip


class GuardCollector(Collector):
    """The guard's state as self-metrics, rendered with the process metrics."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Open connections, the cap, and connections closed by reason."""
        guard = self._guard
        yield GaugeMetricFamily(
            "cockpit_exporter_http_connections",
            "HTTP connections open now.",
            value=guard.open,
        )
        yield GaugeMetricFamily(
            "cockpit_exporter_http_connections_max",
            "The cap on open HTTP connections (--web.max-connections, or less by the fd limit).",
            value=guard.max_connections,
        )
        closed = CounterMetricFamily(
            "cockpit_exporter_http_connections_closed",
            "HTTP connections the server closed: over the cap with all busy (limit), the"
            " longest-waiting one making room at the cap (evicted), or headers too slow"
            " (header_timeout).",
            labels=["reason"],
        )
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], guard.closed[reason])
        yield closed
