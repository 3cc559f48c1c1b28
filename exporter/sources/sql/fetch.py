"""Run one query for one tenant, under its timeout, and classify what went wrong."""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.errors import CollectionError
from exporter.sources.sql.engines import Database

log = structlog.get_logger(__name__)
_KILL_TIMEOUT = 5.0
# MySQL error codes from 2000 up are client-side: the connection itself is in trouble.
_CLIENT_ERRORS = 2000


@dataclass(frozen=True)
class Rows:
    """A query result: column names and rows."""

    columns: list[str]
    rows: Sequence[Sequence[object]]


@dataclass(frozen=True)
class Statement:
    """A query parsed once: SQLAlchemy's form, and MySQL driver text with its parameter order."""

    clause: TextClause
    driver_sql: str
    positions: tuple[str, ...]

    def driver_params(self, params: Mapping[str, object]) -> tuple[object, ...]:
        """Positional parameters for the driver text."""
        return tuple(params[name] for name in self.positions)


class Statements:
    """Compiles each SQL text once per dialect, so runs only bind parameters."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Statement] = {}

    def get(self, sql: str, database: Database) -> Statement:
        """The compiled statement for `sql` on `database`'s dialect."""
        dialect = database.engine.dialect
        found = self._cache.get((sql, dialect.name))
        if found is None:
            clause = text(sql)
            compiled = clause.compile(dialect=dialect)
            found = Statement(clause, compiled.string, tuple(compiled.positiontup or ()))
            self._cache[(sql, dialect.name)] = found
        return found


async def fetch(
    database: Database, statement: Statement, params: Mapping[str, object], seconds: float
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
    statement: Statement,
    params: Mapping[str, object],
    thread_id: list[int],
) -> Rows:
    try:
        return await _attempt(database, statement, params, thread_id, reuse=True)
    except _StaleConnectionError:
        # A kept connection the server had closed (restart, idle timeout): one fresh try.
        return await _attempt(database, statement, params, thread_id, reuse=False)


class _StaleConnectionError(Exception):
    """A connection kept from an earlier run turned out to be dead."""


async def _attempt(
    database: Database,
    statement: Statement,
    params: Mapping[str, object],
    thread_id: list[int],
    reuse: bool,
) -> Rows:
    try:
        conn, reused = await database.acquire(reuse)
    except (SQLAlchemyError, OSError) as exc:
        message = f"cannot connect to {database.display}: {_cause(exc)}"
        raise CollectionError("connect", message) from exc
    try:
        if database.is_mysql:
            rows = await _mysql_rows(conn, statement, params, thread_id)
        else:
            result = await conn.execute(statement.clause, dict(params))
            rows = Rows(list(result.keys()), result.fetchall())
    except BaseException as exc:
        if _connection_still_good(exc):
            database.release(conn)
        else:
            # Cancelled mid-statement (timeout) or broken: never hand it to another run.
            await database.discard(conn)
            if reused and isinstance(exc, Exception):
                raise _StaleConnectionError from exc
        if isinstance(exc, SQLAlchemyError | pymysql.MySQLError | OSError):
            raise CollectionError("query", f"query failed: {_cause(exc)}") from exc
        raise
    database.release(conn)
    return rows


async def _mysql_rows(
    conn: AsyncConnection,
    statement: Statement,
    params: Mapping[str, object],
    thread_id: list[int],
) -> Rows:
    """Run on the driver connection: SQLAlchemy's result layer costs more than the query."""
    # A checked-out connection holds its DBAPI connection, so reading it needs no I/O;
    # get_raw_connection() would cost a greenlet round trip per run.
    driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    thread_id.append(int(driver.thread_id()))
    async with driver.cursor() as cursor:
        await cursor.execute(statement.driver_sql, statement.driver_params(params))
        rows = await cursor.fetchall()
        columns = [column[0] for column in cursor.description or ()]
    return Rows(columns, rows)


def _connection_still_good(exc: BaseException) -> bool:
    """Server-side SQL errors leave the connection usable; anything else may not."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    if isinstance(exc, pymysql.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else _CLIENT_ERRORS
        return code < _CLIENT_ERRORS
    return isinstance(exc, SQLAlchemyError)


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
