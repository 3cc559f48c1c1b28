"""The aiomysql internals the SQL pipeline relies on, reached only through here.

aiomysql has no public call to write many commands in one write, to read replies without
its cursor (one awaited read per field), or to send COM_SET_OPTION; the pipeline needs all
three (docs/performance.md: they halved the CPU per execution). Kept, not replaced: no public
API is as fast. Every private name used is in PRIVATE (TRANSPORT_PRIVATE: on asyncio's socket
transport), and tests/test_sql_internals.py fails, naming what changed, if an aiomysql or
Python upgrade renames or removes one.
"""

from typing import Any

# Name on aiomysql.Connection -> what the pipeline uses it for.
PRIVATE = {
    "_ensure_alive": "refuse a closed connection before writing",
    "_write_bytes": "write a batch of commands in one write",
    "_reader": "the asyncio stream our wire reader reads replies from",
    "_execute_command": "send COM_SET_OPTION (multi-statements off)",
    "_read_packet": "read the server's answer to COM_SET_OPTION",
    "_writer": "its transport, to set how much one socket read takes",
}
# Name on asyncio's selector socket transport -> what the pipeline uses it for.
TRANSPORT_PRIVATE = {"max_size": "the buffer each socket read allocates (asyncio: 256 KiB)"}


def missing(connection: object) -> list[str]:
    """The names of PRIVATE a connection lacks (empty for the aiomysql we know)."""
    return [name for name in PRIVATE if not hasattr(connection, name)]


def transport_missing(transport: object) -> list[str]:
    """The names of TRANSPORT_PRIVATE a transport lacks (empty for the asyncio we know)."""
    return [name for name in TRANSPORT_PRIVATE if not hasattr(transport, name)]


def of(conn: Any) -> Any:
    """The aiomysql connection under a SQLAlchemy AsyncConnection."""
    return conn.sync_connection.connection.driver_connection


def write(driver: Any, data: bytes) -> None:
    """Write `data` (whole commands) to the server in one write."""
    driver._ensure_alive()
    driver._write_bytes(data)


def stream(driver: Any) -> Any:
    """The connection's asyncio StreamReader."""
    return driver._reader


def read_at_most(driver: Any, size: int) -> None:
    """Make each socket read of the connection allocate `size` bytes, not asyncio's 256 KiB."""
    transport = driver._writer.transport
    if not transport_missing(transport):
        transport.max_size = size


async def command(driver: Any, code: int, payload: bytes) -> None:
    """Send one command and read its one-packet answer (an error is raised)."""
    await driver._execute_command(code, payload)
    await driver._read_packet()
