"""Run one query for one tenant, under its timeout, and classify what went wrong."""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.errors import CollectionError
from exporter.sql.engines import Database

log = structlog.get_logger(__name__)
_KILL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Rows:
    """A query result: column names and rows."""

    columns: list[str]
    rows: Sequence[Sequence[object]]


class Statements:
    """Keeps one parsed statement per SQL text, so SQLAlchemy's compile cache hits."""

    def __init__(self) -> None:
        self._cache: dict[str, TextClause] = {}

    def get(self, sql: str) -> TextClause:
        """The parsed statement for `sql`."""
        statement = self._cache.get(sql)
        if statement is None:
            statement = self._cache[sql] = text(sql)
        return statement


async def fetch(
    database: Database, statement: TextClause, params: Mapping[str, object], seconds: float
) -> Rows:
    """Run `statement`; on timeout cancel it server-side and discard the connection."""
    thread_id: list[int] = []
    try:
        async with asyncio.timeout(seconds):
            return await _execute(database, statement, params, thread_id)
    except TimeoutError:
        if thread_id:
            await _kill_query(database, thread_id[0])
        raise CollectionError("timeout", f"query did not finish within {seconds:g}s") from None


async def _execute(
    database: Database,
    statement: TextClause,
    params: Mapping[str, object],
    thread_id: list[int],
) -> Rows:
    try:
        conn = await database.engine.connect()
    except (SQLAlchemyError, OSError) as exc:
        message = f"cannot connect to {database.display}: {_cause(exc)}"
        raise CollectionError("connect", message) from exc
    try:
        if database.is_mysql:
            thread_id.append(await _thread_id(conn))
        result = await conn.execute(statement, dict(params))
        return Rows(list(result.keys()), result.fetchall())
    except (SQLAlchemyError, OSError) as exc:
        raise CollectionError("query", f"query failed: {_cause(exc)}") from exc
    finally:
        # On cancellation SQLAlchemy has already invalidated the connection; this returns
        # (or discards) it without waiting on the server.
        await conn.close()


async def _thread_id(conn: AsyncConnection) -> int:
    raw = await conn.get_raw_connection()
    return int(raw.driver_connection.thread_id())  # type: ignore[union-attr]


async def _kill_query(database: Database, thread_id: int) -> None:
    """Stop the timed-out statement on the server so it does not keep burning resources."""
    try:
        async with asyncio.timeout(_KILL_TIMEOUT), database.engine.connect() as conn:
            await conn.exec_driver_sql(f"KILL QUERY {int(thread_id)}")
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("kill query failed", database=database.display, error=_cause(exc))


def _cause(exc: BaseException) -> str:
    """The driver's own message: it names the problem without the statement or parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text_ = str(exc) or type(exc).__name__
    return text_ if len(text_) <= 300 else text_[:297] + "..."
