"""One bounded connection pool per distinct database, shared by the tenants that use it."""

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exporter.config import DatabaseSpec


@dataclass(frozen=True)
class Database:
    """An engine plus the slots that keep callers from queueing inside the pool."""

    engine: AsyncEngine
    slots: asyncio.Semaphore
    display: str

    @property
    def is_mysql(self) -> bool:
        """Whether the server understands MySQL's KILL QUERY."""
        return self.engine.dialect.name == "mysql"


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

    async def close(self) -> None:
        """Close every pool."""
        databases, self._databases = list(self._databases.values()), {}
        for database in databases:
            await database.engine.dispose()


def _engine(spec: DatabaseSpec) -> AsyncEngine:
    # Queries are read-only: autocommit avoids a BEGIN/ROLLBACK round trip per execution,
    # and with nothing to roll back the pool need not reset connections on return.
    options: dict[str, object] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if spec.url.get_backend_name() == "mysql":
        options |= {"pool_size": spec.pool_size, "max_overflow": 0, "pool_recycle": 3600}
    return create_async_engine(spec.url, **options)
