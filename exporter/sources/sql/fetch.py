"""Run one query for one tenant, under its timeout, and classify what went wrong."""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from exporter.errors import CollectionError
from exporter.sources.sql import protocol
from exporter.sources.sql.engines import Lease, Server, cause, mysql_code

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

    def get(self, sql: str, server: Server) -> Statement:
        """The compiled statement for `sql` on `server`'s dialect."""
        dialect = server.engine.dialect
        found = self._cache.get((sql, dialect.name))
        if found is None:
            clause = text(sql)
            compiled = clause.compile(dialect=dialect)
            found = Statement(clause, compiled.string, tuple(compiled.positiontup or ()))
            self._cache[(sql, dialect.name)] = found
        return found


async def fetch(
    server: Server,
    database: str | None,
    statement: Statement,
    params: Mapping[str, object],
    seconds: float,
) -> Rows:
    """Run `statement` on `database`; on timeout cancel it server-side, discard the connection."""
    thread_id: list[int] = []
    try:
        async with asyncio.timeout(seconds):
            return await _execute(server, database, statement, params, thread_id)
    except TimeoutError:
        if thread_id:
            await _kill_query(server, thread_id[0])
        raise CollectionError("timeout", f"query did not finish within {seconds:g}s") from None


async def _execute(
    server: Server,
    database: str | None,
    statement: Statement,
    params: Mapping[str, object],
    thread_id: list[int],
) -> Rows:
    try:
        return await _attempt(server, database, statement, params, thread_id, reuse=True)
    except _StaleConnectionError:
        # A kept connection the server had closed (restart, idle timeout): one fresh try.
        return await _attempt(server, database, statement, params, thread_id, reuse=False)


class _StaleConnectionError(Exception):
    """A connection kept from an earlier run turned out to be dead."""


async def _attempt(
    server: Server,
    database: str | None,
    statement: Statement,
    params: Mapping[str, object],
    thread_id: list[int],
    *,
    reuse: bool,
) -> Rows:
    lease = await server.acquire(database, reuse)
    try:
        if server.is_mysql:
            rows = await _mysql_rows(
                lease, database, statement, params, thread_id=thread_id, server=server.display
            )
        else:
            result = await lease.conn.execute(statement.clause, dict(params))
            rows = Rows(list(result.keys()), result.fetchall())
    except BaseException as exc:
        if _connection_still_good(exc):
            server.release(lease)
        else:
            # Cancelled mid-statement (timeout) or broken: never hand it to another run.
            await server.discard(lease)
            if lease.reused and isinstance(exc, Exception):
                raise _StaleConnectionError from exc
        if isinstance(exc, SQLAlchemyError | pymysql.MySQLError | OSError):
            raise CollectionError("query", f"query failed: {cause(exc)}") from exc
        raise
    server.release(lease)
    return rows


class _DatabaseError(CollectionError):
    """The tenant's database is missing or not granted; the connection stays usable."""

    def __init__(self, message: str) -> None:
        super().__init__("connect", message)


async def _mysql_rows(
    lease: Lease,
    database: str | None,
    statement: Statement,
    params: Mapping[str, object],
    *,
    thread_id: list[int],
    server: str,
) -> Rows:
    """Run on the driver connection: SQLAlchemy's result layer costs more than the query."""
    # A checked-out connection holds its DBAPI connection, so reading it needs no I/O;
    # get_raw_connection() would cost a greenlet round trip per run.
    driver: Any = lease.conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    thread_id.append(int(driver.thread_id()))
    sql = protocol.bind(driver, statement.driver_sql, statement.driver_params(params))
    select = database if database != lease.database else None
    if select is not None:
        lease.database = None  # unknown until the server confirms the switch
    try:
        columns, rows = await protocol.run(driver, select, sql)
    except protocol.UseError as exc:
        message = f"cannot use database {database!r} on {server}: {cause(exc.cause)}"
        raise _DatabaseError(message) from exc
    lease.database = database
    return Rows(columns, rows)


def _connection_still_good(exc: BaseException) -> bool:
    """Server-side SQL errors leave the connection usable; anything else may not."""
    if isinstance(exc, _DatabaseError):
        return True
    code = mysql_code(exc)
    if code is not None:
        return code < _CLIENT_ERRORS
    if isinstance(exc, pymysql.MySQLError):
        return False
    return isinstance(exc, SQLAlchemyError)


async def _kill_query(server: Server, thread_id: int) -> None:
    """Stop the timed-out statement on the server so it does not keep burning resources."""
    # A connection of its own (NullPool), so a server whose kept connections all hang
    # can still be told to stop.
    try:
        async with asyncio.timeout(_KILL_TIMEOUT), server.engine.connect() as conn:
            await conn.exec_driver_sql(f"KILL QUERY {int(thread_id)}")
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("kill query failed", server=server.display, error=cause(exc))
