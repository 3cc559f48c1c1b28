"""Connections per database server, not per database: tenants on one server share a few.

A Server opens at most its cap of connections, backs off a server that refuses them, and
closes idle ones. MySQL runs reach them through the server's pipeline (pipeline.py), which
selects each run's database on the connection; SQLite runs (a file is its own server) lease
a connection here for one run.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from exporter.config import DatabaseSpec
from exporter.errors import CollectionError
from exporter.sources.sql.protocol import mysql_code
from exporter.sources.sql.sessions import READ_ONLY_ERROR, READ_ONLY_HINT, read_only
from exporter.sources.sql.slots import Slots

log = structlog.get_logger(__name__)
# A connection older than this is replaced so connections follow DNS and failovers.
MAX_AGE = 3600.0
# While a server refuses connections, attempts are spaced from 1 s up to this.
MAX_BACKOFF = 30.0
SWEEP_EVERY = 5.0


@dataclass
class Lease:
    """A connection of a server: lent to one run (SQLite) or held by a pipeline (MySQL)."""

    conn: AsyncConnection
    created: float
    used: float = 0.0
    reused: bool = False
    reader: Any = None  # the pipeline's wire.Reader, once it reads this connection


@dataclass
class Server:
    """One server's connections: at most `cap` open, idle ones kept for the next runs.

    Runs keep their connection checked out of SQLAlchemy (NullPool): going through the
    async pool costs two greenlet round trips per run, more than a small query itself.
    """

    engine: AsyncEngine
    cap: int
    idle_timeout: float
    display: str
    slots: Slots = field(init=False)
    dialect: str = field(init=False)  # the engine's dialect name, asked once per run
    open: int = 0
    _idle: list[Lease] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next_attempt: float = 0.0
    _backoff: float = 0.0
    _last_error: str = ""
    _closed: bool = False

    def __post_init__(self) -> None:
        self.slots = Slots(self.cap)
        self.dialect = self.engine.dialect.name

    @property
    def is_mysql(self) -> bool:
        """Whether the server speaks MySQL (KILL QUERY, COM_INIT_DB)."""
        return self.dialect == "mysql"

    async def acquire(self, reuse: bool = True) -> Lease:
        """A connection for one run; the caller holds one of `slots`."""
        while True:
            if reuse and self._idle:
                return self._take_idle()
            try:
                return await self._connect()
            except CollectionError:
                if self.open == 0:
                    raise
            # The server is full but we hold connections: wait for one of ours rather
            # than fail or storm the server.
            self._released.clear()
            if not self._idle:  # one may have come back while we tried to connect
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.05, self._next_attempt - time.monotonic())):
                        await self._released.wait()
            reuse = True

    def _take_idle(self) -> Lease:
        lease = self._idle.pop()  # the most recently used: the least likely to be stale
        lease.reused = True
        return lease

    async def _connect(self) -> Lease:
        async with self._connecting:  # one attempt at a time per server
            if self._idle:
                return self._take_idle()
            return await self._open()

    async def open_connection(self) -> Lease:
        """A new connection of its own (a pipeline's), within the cap's back-off rules."""
        async with self._connecting:
            return await self._open()

    async def _open(self) -> Lease:
        if time.monotonic() < self._next_attempt:
            raise CollectionError(
                "connect", f"cannot connect to {self.display}: {self._last_error} (backing off)"
            )
        try:
            conn = await self.engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            self._back_off(cause(exc))
            raise CollectionError(
                "connect", f"cannot connect to {self.display}: {cause(exc)}"
            ) from exc
        self._backoff, self.open = 0.0, self.open + 1
        return Lease(conn, time.monotonic())

    def _back_off(self, error: str) -> None:
        self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
        self._next_attempt = time.monotonic() + self._backoff
        if self._last_error != error:
            log.warning(
                "server backed off", server=self.display, seconds=self._backoff, error=error
            )
        self._last_error = error

    def release(self, lease: Lease) -> None:
        """Keep a healthy connection for the next run."""
        if self._closed:  # a reload retired this server while the run used the connection
            self._close_later(lease)
            return
        lease.used = time.monotonic()
        self._idle.append(lease)
        self._released.set()

    async def discard(self, lease: Lease) -> None:
        """Drop a connection that may be mid-statement or broken."""
        self.open -= 1
        with contextlib.suppress(Exception):
            await lease.conn.invalidate()
            await lease.conn.close()

    def retire(self, lease: Lease) -> None:
        """Close a healthy connection that is no longer wanted (idle, or old)."""
        self._close_later(lease)

    def sweep(self) -> None:
        """Close idle connections beyond the first after `idle_timeout`, and old ones."""
        now = time.monotonic()
        keep: list[Lease] = []
        for lease in sorted(self._idle, key=lambda entry: entry.used, reverse=True):
            expired = now - lease.used > self.idle_timeout and len(keep) >= 1
            if expired or now - lease.created > MAX_AGE:
                self._close_later(lease)
            else:
                keep.append(lease)
        self._idle = keep[::-1]  # most recently used last: taken first

    def _close_later(self, lease: Lease) -> None:
        self.open -= 1
        task = asyncio.get_running_loop().create_task(lease.conn.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def close(self) -> None:
        """Close kept connections and the engine."""
        self._closed = True
        idle, self._idle = self._idle, []
        for lease in idle:
            self.open -= 1
            with contextlib.suppress(Exception):
                await lease.conn.close()
        await self.engine.dispose()


_closing: set[asyncio.Task[None]] = set()


def make_engine(spec: DatabaseSpec) -> AsyncEngine:
    """The engine of a server: autocommit, and no pool of its own for MySQL."""
    # Queries are read-only: autocommit avoids a BEGIN/ROLLBACK round trip per execution,
    # and with nothing to roll back the pool need not reset connections on return.
    options: dict[str, object] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    url = spec.server_url
    if url.get_backend_name() == "mysql":
        # Server keeps connections itself; NullPool also gives KILL QUERY a connection of
        # its own when every kept one is busy with a hung statement.
        options["poolclass"] = NullPool
    elif url.database and url.database != ":memory:":
        # Opened, never created: a mistyped path is an error, not an empty database (nor a
        # file left behind by `check-config --connect`).
        url = url.set(database=f"file:{url.database}").update_query_dict(
            {"mode": "rw", "uri": "true"}
        )
    return read_only(create_async_engine(url, **options))


def cause(exc: BaseException) -> str:
    """The driver's own message: it names the problem without the statement or parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text_ = str(exc) or type(exc).__name__
    if mysql_code(exc) == READ_ONLY_ERROR:
        text_ += f" ({READ_ONLY_HINT})"
    return text_ if len(text_) <= 300 else text_[:297] + "..."
