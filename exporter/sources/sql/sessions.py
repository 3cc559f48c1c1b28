"""Every session opened on tenant data is read-only and runs one statement at a time.

A query that writes (`UPDATE`, `DROP`) or smuggles a second statement after a `;` fails its
run with the server's own error and changes nothing. MySQL/MariaDB sessions switch
multi-statements off and set `SESSION TRANSACTION READ ONLY` (and the UTC time zone, so
a TIMESTAMP reads as its instant); SQLite connections set `query_only`. The database user's
grants remain the real fence (docs/security.md).
"""

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.sources.sql import protocol

# What a read-only session answers a writing statement (ER_CANT_EXECUTE_IN_READ_ONLY_...).
READ_ONLY_ERROR = 1792
READ_ONLY_HINT = "queries run in read-only sessions and may not write"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """Make every new connection of `engine` read-only; returns the engine."""
    setup = _mysql if engine.dialect.name == "mysql" else _sqlite
    event.listen(engine.sync_engine, "connect", setup)
    return engine


def _mysql(dbapi_connection: Any, _: object) -> None:
    dbapi_connection.run_async(_lock_mysql)


async def _lock_mysql(conn: Any) -> None:
    await protocol.single_statements(conn)
    async with conn.cursor() as cursor:
        await cursor.execute("SET SESSION TRANSACTION READ ONLY")
        # TIMESTAMP values are instants: read in UTC, whatever the server's default zone.
        await cursor.execute("SET time_zone = '+00:00'")


def _sqlite(dbapi_connection: Any, _: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only = ON")
    finally:
        cursor.close()
