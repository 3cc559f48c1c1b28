"""File descriptors: the soft limit raised to the hard one, and accept errors logged sparingly.

systemd's default soft limit is 1024; Go runtimes raise it to the hard limit at start, and so
do we. When descriptors run out anyway, asyncio reports every failed accept with a traceback:
that is counted and logged at most once per interval instead.
"""

import asyncio
import resource
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)
ACCEPT_LOG_INTERVAL = 10.0
# Beside the server's connections: the HTTP client pool, database connections, files.
RESERVED_SHARE = 2


def soft_limit() -> int:
    """The current soft limit of open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_limit() -> int:
    """Raise the soft limit of open files to the hard limit; the effective soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("file descriptor limit not raised", soft=soft, hard=hard, error=str(exc))
    return soft


def connection_cap(wanted: int, fd_limit: int) -> int:
    """The server's connection cap: at most half the descriptors (16 at the least)."""
    return min(wanted, max(16, fd_limit // RESERVED_SHARE))


class AcceptErrors:
    """A loop exception handler that turns accept failures into one log line per interval."""

    def __init__(self, interval: float = ACCEPT_LOG_INTERVAL) -> None:
        self._interval = interval
        self._last = -interval
        self.count = 0
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Handle one exception context of the loop."""
        if not str(context.get("message", "")).startswith("socket.accept() out of system"):
            loop.default_exception_handler(context)
            return
        self.count += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        exc = context.get("exception")
        log.error(
            "accept failed",
            error=getattr(exc, "strerror", None) or type(exc).__name__,
            failures=self._unlogged,
            hint="raise the open files limit or lower --web.max-connections",
        )
        self._last, self._unlogged = now, 0
