"""One run's exchange with MySQL: select the tenant's database and query in a single write.

Through aiomysql's public calls a run costs two round trips on a shared connection:
COM_INIT_DB, then COM_QUERY, each a write, an event-loop wake-up and a read. Here both
commands go out in one write and the two replies are read in order. This uses aiomysql's
packet helpers (`_write_bytes`, `_read_ok_packet`, `_read_query_result`), so pyproject pins
the aiomysql versions it was checked against; tests/test_shared_connections.py exercises it.
"""

import contextlib
import struct
from collections.abc import Sequence
from typing import Any

import pymysql

COM_INIT_DB, COM_QUERY = 0x02, 0x03
# One MySQL packet holds less than 16 MiB; longer statements take aiomysql's own path.
_ONE_PACKET = 2**24 - 2
# Error numbers from 2000 up are the client's: the connection itself is in trouble.
CLIENT_ERRORS = 2000


class UseError(Exception):
    """The server refused the tenant's database (unknown, dropped, not granted)."""

    def __init__(self, exc: pymysql.MySQLError) -> None:
        super().__init__(str(exc))
        self.cause = exc


def _command(code: int, payload: bytes) -> bytes:
    # Length (3 bytes, little endian) and sequence number 0, then the command byte.
    return struct.pack("<iB", len(payload) + 1, code) + payload


def bind(driver: Any, sql: str, values: Sequence[object]) -> str:
    """The statement with its parameters escaped by the driver, as PyMySQL's cursor does."""
    return sql % tuple(driver.literal(value) for value in values)


async def run(driver: Any, database: str | None, sql: str) -> tuple[list[str], Sequence[Any]]:
    """Select `database` (unless None) and run `sql`; the columns and rows."""
    data = sql.encode(driver.encoding, "surrogateescape")
    if len(data) >= _ONE_PACKET:
        if database is not None:
            await _select(driver, database)
        await driver.query(data)
        return _result(driver)
    driver._ensure_alive()
    if database is None:
        driver._write_bytes(_command(COM_QUERY, data))
    else:
        name = database.encode(driver.encoding)
        driver._write_bytes(_command(COM_INIT_DB, name) + _command(COM_QUERY, data))
        driver._next_seq_id = 1
        try:
            await driver._read_ok_packet()
        except pymysql.MySQLError as exc:
            if _code(exc) >= CLIENT_ERRORS:
                raise
            await _drop_query_reply(driver)
            raise UseError(exc) from exc
    driver._next_seq_id = 1
    await driver._read_query_result()
    while driver._result.has_next:  # a procedure's extra results: keep the connection in step
        await driver.next_result()
    return _result(driver)


async def _select(driver: Any, database: str) -> None:
    try:
        await driver.select_db(database)
    except pymysql.MySQLError as exc:
        if _code(exc) >= CLIENT_ERRORS:
            raise
        raise UseError(exc) from exc


async def _drop_query_reply(driver: Any) -> None:
    """Read the reply of the query sent with a refused COM_INIT_DB, and drop it.

    The server ran it on whatever database the connection had before: its rows are another
    tenant's and must never be used, but reading them keeps the connection in step.
    """
    driver._next_seq_id = 1
    with contextlib.suppress(pymysql.MySQLError):
        await driver._read_query_result()


def _result(driver: Any) -> tuple[list[str], Sequence[Any]]:
    result = driver._result
    return [column[0] for column in result.description or ()], result.rows or ()


def _code(exc: pymysql.MySQLError) -> int:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else CLIENT_ERRORS
