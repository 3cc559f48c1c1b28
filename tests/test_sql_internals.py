"""The aiomysql internals the SQL pipeline uses still exist: an upgrade that changes them fails
here, by name, before any run fails in production."""

import inspect

import aiomysql

from exporter.sources.sql import internals


async def test_every_private_name_the_pipeline_uses_is_on_aiomysqls_connection() -> None:
    """On a real connection (`_reader` exists only once connected)."""
    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        assert internals.missing(connection) == []
        assert internals.stream(connection) is not None
    finally:
        connection.close()


def test_their_shapes_are_the_ones_the_pipeline_calls() -> None:
    """Write takes the bytes; the command sender takes a code and a payload; both readers and
    the command sender are coroutines, the writer and the liveness check are not."""
    connection = aiomysql.Connection
    assert list(inspect.signature(connection._write_bytes).parameters) == ["self", "data"]
    assert list(inspect.signature(connection._ensure_alive).parameters) == ["self"]
    assert len(inspect.signature(connection._execute_command).parameters) == 3
    assert inspect.iscoroutinefunction(connection._execute_command)
    assert inspect.iscoroutinefunction(connection._read_packet)
    assert not inspect.iscoroutinefunction(connection._write_bytes)


def test_the_check_names_what_is_missing() -> None:
    class Renamed:
        _ensure_alive = _reader = _execute_command = _read_packet = _writer = None

    assert internals.missing(Renamed) == ["_write_bytes"]
    assert internals.transport_missing(Renamed) == ["max_size"]


async def test_a_socket_read_takes_at_most_the_size_set() -> None:
    """asyncio's transport still reads `max_size` at a time: set through `read_at_most`, a
    reply of 100 KB arrives in reads of at most 4 KiB, and whole."""
    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        transport = connection._writer.transport
        assert internals.transport_missing(transport) == []
        internals.read_at_most(connection, 4096)
        protocol, sizes = transport.get_protocol(), []
        received = protocol.data_received

        def counted(data: bytes) -> None:
            sizes.append(len(data))
            received(data)

        protocol.data_received = counted
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT REPEAT('x', 100000)")
            assert await cursor.fetchall() == (("x" * 100000,),)
        assert sum(sizes) > 100000 and max(sizes) <= 4096
    finally:
        connection.close()
