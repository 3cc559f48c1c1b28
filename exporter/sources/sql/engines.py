"""One bounded connection pool per distinct database, shared by the tenants that use it."""

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from exporter.config import DatabaseSpec

# A connection idle longer than this may have been dropped by the server or a proxy in
# between; one older than MAX_AGE is replaced so connections follow DNS and failovers.
IDLE_LIMIT = 300.0
MAX_AGE = 3600.0


@dataclass
class _Idle:
    conn: AsyncConnection
    created: float
    used: float


@dataclass
class Database:
    """An engine, the slots that bound its use, and the connections kept between runs.

    Runs keep their connection checked out of SQLAlchemy's pool between runs: checking one
    in and out through the async pool costs two greenlet round trips per run, more than a
    small query itself. `slots` keeps the number of connections within the pool size.
    """

    engine: AsyncEngine
    slots: asyncio.Semaphore
    display: str
    _idle: list[_Idle] = field(default_factory=list)
    _created: dict[int, float] = field(default_factory=dict)
    _closed: bool = False
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def is_mysql(self) -> bool:
        """Whether the server understands MySQL's KILL QUERY."""
        return self.engine.dialect.name == "mysql"

    async def acquire(self, reuse: bool = True) -> tuple[AsyncConnection, bool]:
        """A connection for one run and whether it was kept from an earlier run."""
        now = time.monotonic()
        while reuse and self._idle:
            idle = self._idle.pop()
            if now - idle.used < IDLE_LIMIT and now - idle.created < MAX_AGE:
                self._created[id(idle.conn)] = idle.created
                return idle.conn, True
            await idle.conn.close()
        conn = await self.engine.connect()
        self._created[id(conn)] = now
        return conn, False

    def release(self, conn: AsyncConnection) -> None:
        """Keep a healthy connection for the next run."""
        created = self._created.pop(id(conn), time.monotonic())
        if self._closed:  # a reload retired this pool while the run used the connection
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        self._idle.append(_Idle(conn, created, time.monotonic()))

    async def discard(self, conn: AsyncConnection) -> None:
        """Drop a connection that may be mid-statement or broken."""
        self._created.pop(id(conn), None)
        await conn.invalidate()
        await conn.close()

    async def close(self) -> None:
        """Close kept connections and the pool."""
        self._closed = True
        idle, self._idle = self._idle, []
        for entry in idle:
            await entry.conn.close()
        await self.engine.dispose()


class Engines:
    """Creates engines lazily and disposes of them on close."""

    def __init__(self) -> None:
        self._databases: dict[str, Database] = {}

    def get(self, spec: DatabaseSpec) -> Database:
        """The shared database for `spec`, created on first use."""
        database = self._databases.get(spec.pool_key)
        if database is None:
            database = Database(_engine(spec), asyncio.Semaphore(spec.pool_size), spec.display)
            self._databases[spec.pool_key] = database
        return database

    async def retain(self, keys: set[str]) -> None:
        """Close the pools no job uses any more (after a reload)."""
        for key in [k for k in self._databases if k not in keys]:
            await self._databases.pop(key).close()

    async def close(self) -> None:
        """Close every pool."""
        databases, self._databases = list(self._databases.values()), {}
        for database in databases:
            await database.close()


def _engine(spec: DatabaseSpec) -> AsyncEngine:
    # Queries are read-only: autocommit avoids a BEGIN/ROLLBACK round trip per execution,
    # and with nothing to roll back the pool need not reset connections on return.
    options: dict[str, object] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if spec.url.get_backend_name() == "mysql":
        options |= {"pool_size": spec.pool_size, "max_overflow": 0, "pool_recycle": 3600}
    return create_async_engine(spec.url, **options)
