"""Run one query for one tenant, under its timeout, and classify what went wrong."""

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pymysql
import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from exporter.errors import CollectionError
from exporter.sources.sql import protocol, traced, wire
from exporter.sources.sql.engines import Server, cause
from exporter.sources.sql.pipeline import Pipeline, Request
from exporter.sources.sql.protocol import mysql_code

log = structlog.get_logger(__name__)
_KILL_TIMEOUT = 5.0
# MySQL error codes from 2000 up are client-side: the connection itself is in trouble.
_CLIENT_ERRORS = 2000


@dataclass(frozen=True)
class Rows:
    """A query result: column names and rows, both decoded when asked for.

    `digest` (MySQL replies read by the pipeline) is the same for two results only when
    their column definitions and rows are byte for byte the same.
    """

    columns: Callable[[], list[str]]
    count: int
    decode: Callable[[], Sequence[Sequence[object]]]
    digest: bytes | None = None
    whole: wire.Whole | None = None  # the result set as read whole, to recognise it next time

    @classmethod
    def of(cls, columns: list[str], rows: Sequence[Sequence[object]]) -> "Rows":
        """Rows already decoded (SQLAlchemy's results); no digest."""
        return cls(lambda: columns, len(rows), lambda: rows)

    @classmethod
    def reply(cls, result: wire.Result) -> "Rows":
        """A pipelined reply, parsed and decoded on first use."""
        return cls(lambda: result.columns, len(result), result.rows, result.digest, result.whole)


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
        found = self._cache.get((sql, server.dialect))
        if found is None:
            clause = text(sql)
            compiled = clause.compile(dialect=server.engine.dialect)
            found = Statement(clause, compiled.string, tuple(compiled.positiontup or ()))
            self._cache[(sql, server.dialect)] = found
        return found


async def fetch(
    server: Server, statement: Statement, params: Mapping[str, object], seconds: float
) -> Rows:
    """Run `statement` on a leased connection (SQLite: the file is the server) in `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await _attempt(server, statement, params, reuse=True)
    except _StaleConnectionError:
        # A kept connection the server had closed (restart, idle timeout): one fresh try.
        async with asyncio.timeout(seconds):
            return await _attempt(server, statement, params, reuse=False)
    except TimeoutError:
        raise CollectionError("timeout", f"query did not finish within {seconds:g}s") from None


async def fetch_pipelined(
    pipeline: Pipeline,
    database: str | None,
    statement: Statement,
    params: Mapping[str, object],
    seconds: float,
    *,
    alone: bool,
    known: wire.Whole | None = None,
) -> tuple[Rows, float | None]:
    """Run `statement` on the tenant's database through the server's pipeline.

    On timeout the statement is stopped on the server (`KILL QUERY`) if it is the one running.
    `known` is the result set the last run got (see `Pipeline.submit`).
    """
    values = statement.driver_params(params)
    request = pipeline.submit(
        database, statement.driver_sql, values, seconds, alone=alone, known=known
    )
    # A deadline on the request's future, not asyncio.timeout: no task cancellation to undo
    # for every run, and the pipeline skips a request whose future is already done. All in
    # this one coroutine: each level of awaiting was paid twice by each of thousands of runs.
    tick = pipeline.deadlines.add(request.future, seconds)
    error: BaseException | None = None
    try:
        return Rows.reply(await request.future), request.elapsed
    except BaseException as exc:
        error = exc  # what the trace shows if even the kill is cancelled
        error = await _failure(pipeline, request, database, seconds, exc)
        if error is exc:
            raise
        raise error from (None if isinstance(exc, TimeoutError) else exc)
    finally:
        pipeline.deadlines.discard(tick, request.future)
        stamps = (request.queued_ns, request.turn_ns, request.reply_ns)
        traced.record(pipeline.server, database, statement.driver_sql, stamps, error)


async def _failure(
    pipeline: Pipeline, request: Request, database: str | None, seconds: float, exc: BaseException
) -> BaseException:
    """What a pipelined run raises for `exc`; a timed-out statement still running is killed."""
    if isinstance(exc, TimeoutError):
        if request.thread_id is not None:
            await _kill_query(pipeline.server, request.thread_id)
        return CollectionError("timeout", f"query did not finish within {seconds:g}s")
    if isinstance(exc, protocol.UseError):
        message = (
            f"cannot use database {database!r} on {pipeline.server.display}: {cause(exc.cause)}"
        )
        return CollectionError("connect", message)
    if isinstance(exc, pymysql.MySQLError):
        return CollectionError("query", f"query failed: {cause(exc)}")
    return exc


class _StaleConnectionError(Exception):
    """A connection kept from an earlier run turned out to be dead."""


async def _attempt(
    server: Server, statement: Statement, params: Mapping[str, object], *, reuse: bool
) -> Rows:
    with traced.live("sql queue", server, None, None):
        lease = await server.acquire(reuse)
    try:
        with traced.live(traced.operation(statement.driver_sql), server, None,
                         statement.driver_sql):  # fmt: skip
            result = await lease.conn.execute(statement.clause, dict(params))
            rows = Rows.of(list(result.keys()), result.fetchall())
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


def _connection_still_good(exc: BaseException) -> bool:
    """Server-side SQL errors leave the connection usable; anything else may not."""
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
