"""The pieces of MySQL's wire protocol the pipeline writes and reads itself.

aiomysql offers one command per round trip; the pipeline (pipeline.py) writes many commands at
once (through aiomysql's `_write_bytes`, see internals.py) and reads their replies itself
(wire.py), so
pyproject pins the aiomysql versions this was checked against, and
tests/test_shared_connections.py exercises it on a real server.
"""

import struct
from collections.abc import Sequence
from typing import Any

import pymysql
from sqlalchemy.exc import DBAPIError

from exporter.sources.sql import internals

COM_INIT_DB, COM_QUERY, COM_SET_OPTION = 0x02, 0x03, 0x1B
MULTI_STATEMENTS_OFF = 1
# One packet holds less than 16 MiB; a statement that long is refused, not split.
ONE_PACKET = 2**24 - 2
# Error numbers from 2000 up are the client's: the connection itself is in trouble.
CLIENT_ERRORS = 2000


class UseError(Exception):
    """The server refused the tenant's database (unknown, dropped, not granted)."""

    def __init__(self, exc: pymysql.MySQLError) -> None:
        super().__init__(str(exc))
        self.cause = exc


def command(code_: int, payload: bytes) -> bytes:
    """One command packet: length (3 bytes, little endian), sequence 0, command byte, payload."""
    if len(payload) >= ONE_PACKET:
        raise ValueError("the statement is longer than 16 MiB")
    return struct.pack("<iB", len(payload) + 1, code_) + payload


async def single_statements(conn: Any) -> None:
    """Switch multi-statements off on an aiomysql connection, which always asks for them.

    COM_SET_OPTION is the protocol's own switch (the C API's mysql_set_server_option);
    aiomysql has no public call for it, so its command writer and packet reader are used.
    The server answers EOF, or an error the reader raises.
    """
    await internals.command(conn, COM_SET_OPTION, struct.pack("<H", MULTI_STATEMENTS_OFF))


def bind(driver: Any, sql: str, values: Sequence[object]) -> str:
    """The statement with its parameters escaped by the driver, as PyMySQL's cursor does."""
    return sql % tuple(driver.literal(value) for value in values)


def code(exc: pymysql.MySQLError) -> int:
    """The error number; errors without one count as the client's."""
    number = mysql_code(exc)
    return CLIENT_ERRORS if number is None else number


def mysql_code(exc: BaseException) -> int | None:
    """The MySQL error number of `exc`, if it carries one."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None
