"""Spans of one SQL statement: the wait for a shared connection, then the time on the server.

The pipeline serves many runs per connection, so both spans are made after the fact from
the times it stamped on the request (queued, its turn, its reply), in the run's trace.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.trace import SpanKind, StatusCode

from exporter import spans
from exporter.sources.sql.engines import Server


def attributes(server: Server, database: str | None, sql: str) -> dict[str, str | int]:
    """The database semantic conventions' attributes of a statement (its text, never values)."""
    url = server.engine.url
    found: dict[str, str | int] = {
        "db.system.name": "mysql" if server.is_mysql else url.get_backend_name(),
        "db.query.text": sql,
        "server.address": url.host or "",
    }
    if url.port is not None:
        found["server.port"] = url.port
    if database or url.database:
        found["db.namespace"] = database or url.database or ""
    return found


def operation(sql: str) -> str:
    """The statement's first keyword, as the conventions name a database span."""
    words = sql.split(None, 1)
    return words[0].upper() if words else "query"


def record(
    server: Server,
    database: str | None,
    sql: str,
    stamps: tuple[int, int | None, int | None],
    error: BaseException | None,
) -> None:
    """Queue and statement spans from (queued, turn, reply) times in ns since the epoch."""
    if not spans.on():
        return
    queued, turn, reply = stamps
    now = time.time_ns()
    tracer = spans.tracer()
    queue = tracer.start_span("sql queue", attributes={"db.namespace": database or ""},
                              start_time=queued)  # fmt: skip
    queue.end(end_time=turn or now)
    if turn is None:  # never reached the server (timed out waiting, or no connection)
        return
    statement = tracer.start_span(operation(sql), kind=SpanKind.CLIENT, start_time=turn,
                                  attributes=attributes(server, database, sql))  # fmt: skip
    if error is not None:
        statement.set_attribute("error.type", type(error).__name__)
        statement.set_status(StatusCode.ERROR, str(error))
    statement.end(end_time=reply or now)


@contextmanager
def live(name: str, server: Server, database: str | None, sql: str | None) -> Iterator[None]:
    """A span around work done in place (a connection's lease, or an unshared statement)."""
    if not spans.on():
        yield
        return
    kind = SpanKind.CLIENT if sql is not None else SpanKind.INTERNAL
    found = attributes(server, database, sql) if sql is not None else {}
    with spans.span(name, kind=kind, attributes=found, record_exception=False):
        yield
