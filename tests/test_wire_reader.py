"""The pipeline's reply reader on replies a real MariaDB sent, arriving in every way they can.

A reply is taken whole when all of it has arrived (`Reader.whole_result`), else packet by
packet; both must give the same columns, rows, status and errors, wherever the bytes are cut.
"""

import asyncio
import functools
import socket
from types import SimpleNamespace

import pymysql
import pytest
from pymysql.converters import decoders

from exporter.sources.sql import protocol, wire
from tests.conftest import MARIADB

DRIVER = SimpleNamespace(encoding="utf8", decoders=decoders, server_status=0)
QUERY = (
    "SELECT seq AS n, CONCAT('q', seq % 3) AS queue, NULL AS nothing, seq * 1.5 AS half"
    " FROM seq_1_to_20"
)


def raw_reply(sql: str) -> bytes:
    """The bytes MariaDB sends for `sql`, as they came off the socket (nothing parsed)."""
    return raw_command(protocol.COM_QUERY, sql.encode())


def raw_command(code: int, payload: bytes) -> bytes:
    """The bytes MariaDB sends back for one command."""
    # Any database will do for the SEQUENCE engine's seq_1_to_N tables: nothing is written.
    conn = pymysql.connect(**MARIADB, database="mysql")
    try:
        sock: socket.socket = conn._sock  # type: ignore[attr-defined]
        sock.sendall(protocol.command(code, payload))
        sock.settimeout(10)  # a server that stops mid-reply fails the test, never hangs it
        data = bytearray()
        while not complete(data):
            chunk = sock.recv(1 << 16)
            assert chunk, f"the server closed the connection mid-reply: {bytes(data)!r}"
            data += chunk
        return bytes(data)
    finally:
        conn.close()


def complete(data: bytearray) -> bool:
    """Whether `data` holds one whole reply: OK or error, or a result set up to its last EOF."""
    packets, position = [], 0
    while position + 4 <= len(data):
        end = position + 4 + int.from_bytes(data[position : position + 3], "little")
        if end > len(data):
            break
        packets.append(bytes(data[position + 4 : end]))
        position = end
    if not packets or position != len(data):
        return False
    if packets[0][0] in (0x00, 0xFF):
        return True
    last = packets[-1]
    after_definitions = len(packets) > packets[0][0] + 2  # count, definitions, their EOF
    return after_definitions and (last[0] == 0xFF or (last[0] == 0xFE and len(last) < 9))


async def read(pieces: list[bytes], trailer: bytes = b"") -> tuple[wire.Result, wire.Reader]:
    """`read_result` on a stream that gets `pieces` one by one, each after the reader waits."""
    stream = asyncio.StreamReader()
    reader = wire.Reader(stream)
    task = asyncio.create_task(wire.read_result(reader, DRIVER))
    for piece in pieces:
        stream.feed_data(piece)
        await asyncio.sleep(0)
    stream.feed_data(trailer)
    return await task, reader


def decoded(result: wire.Result) -> tuple[list[str], list[tuple[object, ...]], int]:
    return result.columns, result.rows(), len(result)


async def test_a_reply_cut_at_any_byte_reads_as_the_whole_reply() -> None:
    reply = raw_reply(QUERY)
    whole, _ = await read([reply])
    columns, rows, count = decoded(whole)
    assert columns == ["n", "queue", "nothing", "half"] and count == 20
    assert [str(v) for v in rows[2]] == ["3", "q0", "None", "4.5"]
    for cut in range(1, len(reply)):
        result, _ = await read([reply[:cut], reply[cut:]])
        assert decoded(result) == (columns, rows, count), cut


async def test_equal_digests_mean_equal_rows_and_any_change_changes_it() -> None:
    first, _ = await read([raw_reply(QUERY)])
    again, _ = await read([raw_reply(QUERY)])
    other, _ = await read([raw_reply(QUERY.replace("seq * 1.5", "seq * 2.5"))])
    assert first.digest == again.digest
    assert other.digest != first.digest


async def test_the_next_replys_bytes_stay_in_the_buffer() -> None:
    """Two replies in one read (a batch): the first is cut exactly at its end."""
    one, two = raw_reply(QUERY), raw_reply("SELECT 'second' AS s")
    stream = asyncio.StreamReader()
    reader = wire.Reader(stream)
    stream.feed_data(one + two)
    first = await wire.read_result(reader, DRIVER)
    second = await wire.read_result(reader, DRIVER)
    assert len(first) == 20
    assert (second.columns, second.rows()) == (["s"], [("second",)])


async def test_an_error_after_rows_is_the_servers_error() -> None:
    """MariaDB fails a query after it has sent rows: the error is raised, not half a result."""
    # Rows 1 to 6 get at most one row from the subquery; row 7 gets two.
    sql = "SELECT s.seq, (SELECT seq FROM seq_1_to_10 WHERE seq > 15 - s.seq) FROM seq_1_to_9 s"
    reply = raw_reply(sql)
    assert b"\x016\x0210" in reply  # the sixth row, sent before the error
    assert reply.endswith(b"Subquery returns more than 1 row")
    with pytest.raises(pymysql.MySQLError) as caught:
        await read([reply])
    assert protocol.code(caught.value) < protocol.CLIENT_ERRORS


async def test_a_reply_over_the_bound_is_read_packet_by_packet_with_the_same_rows() -> None:
    sql = "SELECT seq, REPEAT('x', 1000) AS pad FROM seq_1_to_400"  # about 400 KB
    reply = raw_reply(sql)
    assert len(reply) > wire._WHOLE_AT_MOST
    pieces = [reply[i : i + 1500] for i in range(0, len(reply), 1500)]
    slow, _ = await read(pieces)
    assert len(slow) == 400 and [str(v) for v in slow.rows()[399]] == ["400", "x" * 1000]
    fast, _ = await read([reply])  # all there at once: still over the bound
    assert decoded(fast) == decoded(slow)


async def test_a_reply_without_rows_and_a_lost_connection() -> None:
    ok, _ = await read([raw_reply("DO 1")])
    assert (ok.columns, ok.rows(), len(ok)) == ([], [], 0)
    reply = raw_reply(QUERY)
    stream = asyncio.StreamReader()
    stream.feed_data(reply[: len(reply) // 2])
    stream.feed_eof()
    with pytest.raises(pymysql.err.OperationalError, match="Lost connection"):
        await wire.read_result(wire.Reader(stream), DRIVER)


@functools.cache
def earlier_reply() -> bytes:
    return raw_reply("SELECT 1 AS one")


async def buffered(data: bytes) -> tuple[wire.Reader, asyncio.StreamReader]:
    """A reader holding `data` in its buffer, as a batch leaves it after an earlier reply."""
    stream = asyncio.StreamReader()
    reader = wire.Reader(stream)
    stream.feed_data(earlier_reply() + data)
    await wire.read_result(reader, DRIVER)  # reads everything fed, takes only its own reply
    return reader, stream


async def test_a_whole_reply_is_taken_in_one_call_and_a_partial_one_not_at_all() -> None:
    """`ready_reply` takes COM_INIT_DB's OK and the rows after it with one plain call once
    both have arrived (the awaited reading's rows and digest), and at every earlier cut
    takes nothing, so the awaited reading still gets the whole; the next reply stays."""
    use, reply = raw_command(protocol.COM_INIT_DB, b"mysql"), raw_reply(QUERY)
    after = raw_reply("SELECT 'second' AS s")
    awaited, _ = await read([reply])
    data = use + reply
    for cut in range(len(data)):
        reader, stream = await buffered(data[:cut])
        assert wire.ready_reply(reader, DRIVER, after_ok=True) is None, cut
        stream.feed_data(data[cut:])
        await wire.read_ok(reader, DRIVER)
        result = await wire.read_result(reader, DRIVER)
        assert (decoded(result), result.digest) == (decoded(awaited), awaited.digest), cut
    reader, _ = await buffered(data + after)
    taken = wire.ready_reply(reader, DRIVER, after_ok=True)
    assert taken is not None
    assert (decoded(taken), taken.digest) == (decoded(awaited), awaited.digest)
    assert (await wire.read_result(reader, DRIVER)).rows() == [("second",)]
    reader, _ = await buffered(reply)  # no database to select: the rows alone
    alone = wire.ready_reply(reader, DRIVER, after_ok=False)
    assert alone is not None and alone.digest == awaited.digest


async def test_a_refused_database_is_left_to_the_awaited_reading() -> None:
    """COM_INIT_DB refused (an error, not OK): nothing is taken, and `read_ok` raises the
    server's error, so the run never gets the rows of whatever database was selected before."""
    refused = raw_command(protocol.COM_INIT_DB, b"cockpit_no_such_database")
    reader, _ = await buffered(refused + raw_reply(QUERY))
    assert wire.ready_reply(reader, DRIVER, after_ok=True) is None
    with pytest.raises(pymysql.MySQLError) as caught:
        await wire.read_ok(reader, DRIVER)
    assert protocol.code(caught.value) == 1049  # ER_BAD_DB_ERROR: unknown database


async def test_a_known_reply_is_recognised_and_any_other_byte_is_not() -> None:
    """A run passes the result set its job got last time: the very same bytes, EOF included,
    are taken without walking their packets (the same `Whole`); a changed row, a changed EOF
    status or a reply not all here yet is never taken for it."""
    use, reply = raw_command(protocol.COM_INIT_DB, b"mysql"), raw_reply(QUERY)
    after = raw_reply("SELECT 'second' AS s")
    reader, _ = await buffered(use + reply + after)
    first = wire.ready_reply(reader, DRIVER, after_ok=True)
    assert first is not None and first.whole is not None
    known = first.whole

    reader, _ = await buffered(use + reply + after)
    again = wire.ready_reply(reader, DRIVER, after_ok=True, known=known)
    assert again is not None and again.whole is known and again.digest == first.digest
    assert decoded(again) == decoded(first)
    assert (await wire.read_result(reader, DRIVER)).rows() == [("second",)]

    changed = raw_reply(QUERY.replace("seq * 1.5", "seq * 2.5"))
    reader, _ = await buffered(use + changed)
    other = wire.ready_reply(reader, DRIVER, after_ok=True, known=known)
    assert other is not None and other.whole is not known and other.digest != first.digest
    assert decoded(other) == decoded((await read([changed]))[0])

    # The same rows, another status in the EOF (here: no index used): a new result set.
    status = int.from_bytes(reply[-2:], "little") ^ 0x0020
    flagged = reply[:-2] + status.to_bytes(2, "little")
    reader, _ = await buffered(use + flagged)
    DRIVER.server_status = 0
    taken = wire.ready_reply(reader, DRIVER, after_ok=True, known=known)
    assert taken is not None and taken.whole is not known and DRIVER.server_status == status

    data = use + reply
    for cut in range(len(data)):
        reader, _ = await buffered(data[:cut])
        assert wire.ready_reply(reader, DRIVER, after_ok=True, known=known) is None, cut


async def test_a_known_reply_with_more_results_after_it_is_left_to_the_awaited_reading() -> None:
    """A result set read the awaited way may say more results follow (a procedure's): the
    plain call never takes it, known or not, so the results after it are read and dropped."""
    reply = raw_reply(QUERY)
    status = int.from_bytes(reply[-2:], "little") | 0x0008  # SERVER_MORE_RESULTS_EXISTS
    more = reply[:-2] + status.to_bytes(2, "little")
    stream = asyncio.StreamReader()
    stream.feed_data(more)
    known = await wire.Reader(stream).whole_result()
    assert known is not None and not known.last
    reader, _ = await buffered(more)
    assert wire.ready_reply(reader, DRIVER, after_ok=False, known=known) is None
    assert wire.ready_reply(reader, DRIVER, after_ok=False) is None
