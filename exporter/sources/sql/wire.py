"""Read MySQL replies straight from a connection's stream, many packets per wake-up.

aiomysql reads each packet with two awaited stream reads and parses each field through a
method call; at fleet size that parsing was most of a run's CPU. This reader takes whatever
bytes have arrived, cuts them into packets, and decodes rows in one loop: numbers, dates and
bits as typed text (`cells`: labels keep the server's text), strings as aiomysql does. Once
a connection is read here, aiomysql's own reading must not touch it again: the bytes of the
next reply may already sit in this reader's buffer.
"""

import asyncio
import hashlib
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import pymysql
from pymysql.constants import FIELD_TYPE, SERVER_STATUS
from pymysql.converters import through
from pymysql.err import raise_mysql_exception
from pymysql.protocol import FieldDescriptorPacket

from exporter.sources.sql import cells

_OK, _EOF, _ERR, _NULL = 0x00, 0xFE, 0xFF, 0xFB
_CONTINUED = 0xFFFFFF  # a payload this long goes on in the next packet
_BINARY_CHARSET = 63
_TEXT_TYPES = frozenset({
    FIELD_TYPE.BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.STRING, FIELD_TYPE.TINY_BLOB, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR,
    FIELD_TYPE.GEOMETRY,
})  # fmt: skip
Converter = tuple[str | None, Callable[[Any], Any] | None]
_WIDTHS = {0xFC: 2, 0xFD: 3, 0xFE: 8}
_PARTIAL = "partial"  # `_scan`: the result set has not all arrived yet
# A result set larger than this is read packet by packet: each arrival scans what has come
# so far again, so a large reply trickling in would cost its size times its arrivals.
_WHOLE_AT_MOST = 64 * 1024


class Reader:
    """Whole packets from one connection's stream; keeps bytes that belong to later replies."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._position = 0

    def ready(self) -> bytes | None:
        """The next packet's payload if it has fully arrived and is not continued, else None.

        Most packets of a reply arrive in the same read: taking them with a plain call saves
        an awaited call (a coroutine) per packet.
        """
        end = self._whole(self._position)
        if end is None:
            return None
        payload = bytes(self._buffer[self._position + 4 : end])
        self._advance(end)
        return payload

    def rows(self, payloads: list[bytes]) -> bytes | None:
        """Take the row packets that have arrived; the packet ending the rows, or None.

        Appends each whole row packet to `payloads` and returns the EOF or error packet after
        them; None when the next packet is not all here, or is one `packet()` must read
        (continued or empty). One loop over the buffer, not a call per row: a small result's
        rows arrive together.
        """
        start = self._position
        try:
            while (end := self._whole(start)) is not None:
                payload = bytes(self._buffer[start + 4 : end])
                start = end
                if _ends_rows(payload):
                    return payload
                payloads.append(payload)
            return None
        finally:
            self._advance(start)

    def _whole(self, start: int) -> int | None:
        """Where the packet at `start` ends; None unless all here, not continued, not empty."""
        buffer = self._buffer
        if len(buffer) - start < 4:
            return None
        length = buffer[start] | buffer[start + 1] << 8 | buffer[start + 2] << 16
        end = start + 4 + length
        return end if 0 < length < _CONTINUED and len(buffer) >= end else None

    async def whole_result(self) -> "Whole | None":
        """A result set cut in one piece once all of it has arrived, or None.

        Nothing is copied per row. None leaves the reply to the packet-by-packet reading: an
        OK or error reply, a continued or empty packet, a column count over 250, or more than
        `_WHOLE_AT_MOST`.
        """
        while True:
            scanned = _scan(self._buffer, self._position)
            if scanned != _PARTIAL:
                break
            if len(self._buffer) - self._position > _WHOLE_AT_MOST:
                return None
            chunk = await self._stream.read(1 << 16)
            if not chunk:
                raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
            self._buffer += chunk
        if not isinstance(scanned, tuple):
            return None
        whole = self._cut(self._position, scanned)
        self._advance(self._position + whole.size)
        return whole

    def whole_reply(
        self, after_ok: bool, known: "Whole | None"
    ) -> "tuple[bytes | None, Whole] | None":
        """An OK packet (if `after_ok`) and the whole result set after it, if all here.

        None, with nothing taken, unless both have arrived and no further result follows.
        The common reply of a pipelined run is taken with one plain call instead of a chain
        of awaited ones; one that is `known` (the last run's, byte for byte, up to its EOF)
        with two comparisons instead of a walk over its packets.
        """
        buffer, start = self._buffer, self._position
        ok = None
        if after_ok:
            end = self._whole(start)
            if end is None or buffer[start + 4] != _OK:
                return None
            ok, start = bytes(buffer[start + 4 : end]), end
        if known is not None and known.last and known.found_at(buffer, start):
            # Its bytes fix where each packet ends, so the walk would find the same cut.
            self._advance(start + known.size)
            return ok, known
        scanned = _scan(buffer, start)
        if not isinstance(scanned, tuple):
            return None
        whole = self._cut(start, scanned)
        if not whole.last:
            return None  # the results after it are read (and dropped) the awaited way
        self._advance(start + whole.size)
        return ok, whole

    def _cut(self, start: int, scanned: tuple[int, int, int, int]) -> "Whole":
        """The result set `_scan` found at `start` (not taken yet: the caller advances)."""
        rows_end, columns, count, end = scanned
        buffer = self._buffer
        return Whole(bytes(buffer[start:rows_end]), bytes(buffer[rows_end:end]), columns, count)

    async def packet(self) -> bytes:
        """The next packet's payload (continuations joined)."""
        payload = await self._one()
        if len(payload) < _CONTINUED:
            return payload
        parts = [payload]
        while True:
            more = await self._one()
            parts.append(more)
            if len(more) < _CONTINUED:
                return b"".join(parts)

    async def _one(self) -> bytes:
        while True:
            buffer, start = self._buffer, self._position
            if len(buffer) - start >= 4:
                length = buffer[start] | buffer[start + 1] << 8 | buffer[start + 2] << 16
                end = start + 4 + length
                if len(buffer) >= end:
                    payload = bytes(buffer[start + 4 : end])
                    self._advance(end)
                    return payload
            chunk = await self._stream.read(1 << 16)
            if not chunk:
                raise pymysql.err.OperationalError(2013, "Lost connection to server during query")
            self._buffer += chunk

    def _advance(self, end: int) -> None:
        if end == len(self._buffer):
            self._buffer.clear()
            end = 0
        elif end > 1 << 16:  # drop what was read once it is worth a copy
            del self._buffer[:end]
            end = 0
        self._position = end


async def read_ok(reader: Reader, driver: Any) -> None:
    """An OK reply (to COM_INIT_DB); the server's error is raised as PyMySQL would."""
    payload = reader.ready() or await reader.packet()
    if payload[0] == _ERR:
        raise_mysql_exception(payload)
    if payload[0] != _OK:
        raise pymysql.err.OperationalError(2014, "Command Out of Sync")
    _status_after_ok(payload, driver)


class Whole:
    """A result set taken whole: its packets up to the last row, and the EOF packet after.

    `raw` keeps the packet headers; `digest` covers it (the column definitions and rows as
    sent, each self-delimiting), so equal digests mean equal rows.
    """

    __slots__ = ("columns", "count", "digest", "last", "raw", "size", "status", "tail")

    def __init__(self, raw: bytes, tail: bytes, columns: int, count: int) -> None:
        self.raw, self.tail, self.columns, self.count = raw, tail, columns, count
        self.size = len(raw) + len(tail)
        self.status = _eof_status(tail[4:])
        self.last = not self.status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS
        self.digest = _digest(raw)

    def found_at(self, buffer: bytearray, start: int) -> bool:
        """Whether `buffer` holds this very result set, EOF included, at `start`."""
        return buffer.startswith(self.raw, start) and buffer.startswith(
            self.tail, start + len(self.raw)
        )


class Result:
    """A COM_QUERY reply's first result set, parsed and decoded on first use.

    `digest` covers the column definitions and the rows as sent (each is self-delimiting), so
    two replies with the same digest decode to the same rows: a run can reuse the series it
    rendered last time without parsing the columns or decoding the rows at all.
    """

    def __init__(self, header: list[bytes], payloads: list[bytes], driver: Any) -> None:
        self._start(_digest(b"".join(header + payloads)), len(payloads), driver)
        self._parts: tuple[list[bytes], list[bytes]] | None = (header, payloads)
        self._raw, self._columns = b"", 0
        self.whole: Whole | None = None  # read packet by packet: nothing to recognise it by

    @classmethod
    def packed(cls, whole: Whole, driver: Any) -> "Result":
        """A result set cut from the buffer whole, packet headers and all (see `_scan`).

        Its packets are split only if it is decoded: most replies are the same as the last
        run's, and their digest is all a run needs.
        """
        result = cls.__new__(cls)
        result._start(whole.digest, whole.count, driver)
        result._parts, result._raw, result._columns = None, whole.raw, whole.columns
        result.whole = whole
        return result

    def _start(self, digest: bytes, count: int, driver: Any) -> None:
        self.digest = digest
        self._count = count
        self._encoding: str = driver.encoding
        self._decoders: Mapping[int, Any] = driver.decoders

    def _packets(self) -> tuple[list[bytes], list[bytes]]:
        """The column count and definitions, and the rows' payloads."""
        if self._parts is None:
            payloads = _split(self._raw)
            # After the definitions comes their EOF packet, then the rows.
            self._parts = payloads[: self._columns + 1], payloads[self._columns + 2 :]
        return self._parts

    @cached_property
    def _fields(self) -> list[Any]:
        # PyMySQL parses column definitions; its stubs do not declare their attributes.
        with _malformed():
            definitions = self._packets()[0][1:]
            return [FieldDescriptorPacket(packet, self._encoding) for packet in definitions]

    @property
    def columns(self) -> list[str]:
        """The column names (OperationalError if the server sent a malformed definition)."""
        return [field.name for field in self._fields]

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows, converted by type (OperationalError if the server sent one malformed)."""
        converters = [_converter(f, self._encoding, self._decoders) for f in self._fields]
        with _malformed():
            return [_row(payload, converters) for payload in self._packets()[1]]

    def __len__(self) -> int:
        return self._count


def ready_reply(
    reader: Reader, driver: Any, after_ok: bool, known: Whole | None = None
) -> Result | None:
    """The reply to (COM_INIT_DB and) COM_QUERY if it has all arrived as rows; else None.

    None takes nothing: the reply is then read with `read_ok` and `read_result`. `known`,
    the last run's result set, is recognised without walking its packets.
    """
    taken = reader.whole_reply(after_ok, known)
    if taken is None:
        return None
    ok, whole = taken
    if ok is not None:
        _status_after_ok(ok, driver)
    driver.server_status = whole.status
    return Result.packed(whole, driver)


async def read_result(reader: Reader, driver: Any) -> Result:
    """A COM_QUERY reply: its first result set (extra result sets are read and dropped)."""
    result, more = await _one_result(reader, driver)
    while more:
        _, more = await _one_result(reader, driver)
    return result


async def _one_result(reader: Reader, driver: Any) -> tuple[Result, bool]:
    whole = await reader.whole_result()
    if whole is not None:
        driver.server_status = whole.status
        return Result.packed(whole, driver), not whole.last
    first = reader.ready() or await reader.packet()
    if first[0] == _ERR:
        raise_mysql_exception(first)
    if first[0] == _OK:
        return Result([], [], driver), _status_after_ok(first, driver)
    count, _ = _length(first, 0)
    header = [first]
    for _ in range(count):
        header.append(reader.ready() or await reader.packet())
    _ = reader.ready() or await reader.packet()  # the EOF after the column definitions
    payloads: list[bytes] = []
    while True:
        last = reader.rows(payloads)
        if last is None:  # more to come: wait for the next packet
            last = await reader.packet()
            if not _ends_rows(last):
                payloads.append(last)
                continue
        if last[0] == _ERR:
            raise_mysql_exception(last)
        return Result(header, payloads, driver), _status_after_eof(last, driver)


def _digest(content: bytes) -> bytes:
    # Equal digests mean equal content: both forms are self-delimiting, and a result read
    # one way never matches one read the other (a whole one carries packet headers).
    return hashlib.blake2b(content, digest_size=16).digest()


def _status_after_eof(payload: bytes, driver: Any) -> bool:
    """Keep the driver's server status current; True if more results follow."""
    status = _eof_status(payload)
    driver.server_status = status
    return bool(status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS)


def _eof_status(payload: bytes | bytearray) -> int:
    """The server status an EOF packet carries (after its header byte and warnings)."""
    return int.from_bytes(payload[3:5], "little")


def _scan(buffer: bytearray, start: int) -> tuple[int, int, int, int] | str | None:
    """Where a result set at `start` ends, if all of it is in `buffer`.

    (end of the last row packet, columns, rows, end of the EOF after them); `_PARTIAL` if
    more must arrive first; None if `whole_result` does not take this reply (see there).
    One loop of arithmetic per packet: no call and no copy per row.
    """
    size, position = len(buffer), start
    columns = count = 0
    before_rows = -1  # packets left before the rows: set by the column count
    while True:
        if size - position < 5:
            return _PARTIAL
        length = buffer[position] | buffer[position + 1] << 8 | buffer[position + 2] << 16
        if length == 0 or length >= _CONTINUED:
            return None
        end = position + 4 + length
        if end > size:
            return _PARTIAL
        head = buffer[position + 4]
        if before_rows < 0:  # the column count, or a reply with no result set
            if head >= _NULL or head == _OK:
                return None
            columns, before_rows = head, head + 1  # the definitions, then their EOF
        elif before_rows:
            before_rows -= 1
        elif head == _ERR or (head == _EOF and length < 9):
            return (position, columns, count, end) if head == _EOF else None
        else:
            count += 1
        position = end


def _split(raw: bytes) -> list[bytes]:
    """The payloads of whole packets (as `_scan` found them)."""
    payloads = []
    position = 0
    while position < len(raw):
        end = position + 4 + (raw[position] | raw[position + 1] << 8 | raw[position + 2] << 16)
        payloads.append(raw[position + 4 : end])
        position = end
    return payloads


def _ends_rows(payload: bytes) -> bool:
    """Whether a packet ends a result's rows: EOF (short, so no row of 0xFE) or an error."""
    head = payload[0]
    return (head == _EOF and len(payload) < 9) or head == _ERR


@contextmanager
def _malformed() -> Iterator[None]:
    """Decoding errors of a reply's content as the driver's own error for a bad packet."""
    try:
        yield
    except (IndexError, ValueError, struct.error) as exc:
        raise pymysql.err.OperationalError(2027, f"Malformed packet: {exc}") from exc


def _converter(field: Any, encoding: str, decoders: Mapping[int, Any]) -> Converter:
    """Numbers, dates and bits as typed text (`cells`), the rest decoded as aiomysql does.

    aiomysql's own decoding (its MySQLResult._get_descriptions) turned a FLOAT label into
    `16777200.0` and a DATETIME into `2024-02-29T12:34:56`: not what the server sent.
    """
    kind = field.type_code
    if kind == FIELD_TYPE.BIT:
        return None, cells.Bits
    typed = cells.TYPES.get(kind)
    if typed is not None:
        return "ascii", typed
    text: str | None = "ascii"
    if kind == FIELD_TYPE.JSON:
        text = encoding
    elif kind in _TEXT_TYPES:
        text = None if field.charsetnr == _BINARY_CHARSET else encoding
    convert = decoders.get(kind)
    return text, (None if convert is through else convert)


def _row(payload: bytes, converters: Sequence[Converter]) -> tuple[Any, ...]:
    values: list[Any] = []
    position = 0
    for encoding, convert in converters:
        head = payload[position]
        if head == _NULL:
            values.append(None)
            position += 1
            continue
        size, start = _length(payload, position)
        position = start + size
        if position > len(payload):  # a slice would quietly cut the value short
            raise ValueError("a value runs past the end of its row")
        data: Any = payload[start:position]
        if encoding is not None:
            data = data.decode(encoding)
        values.append(data if convert is None else convert(data))
    return tuple(values)


def _length(payload: bytes, position: int) -> tuple[int, int]:
    """A length-encoded integer at `position`, and the position after it."""
    head = payload[position]
    if head < _NULL:
        return head, position + 1
    width = _WIDTHS.get(head)
    if width is None:  # 0xFB (NULL, or a LOCAL INFILE request) and 0xFF have no length
        raise pymysql.err.OperationalError(2027, f"Malformed packet: length byte {head:#x}")
    end = position + 1 + width
    return int.from_bytes(payload[position + 1 : end], "little"), end


def _status_after_ok(payload: bytes, driver: Any) -> bool:
    """Keep the driver's server status current (escaping reads it); True if more results."""
    _, position = _length(payload, 1)  # affected rows
    _, position = _length(payload, position)  # last insert id
    status = int.from_bytes(payload[position : position + 2], "little")
    driver.server_status = status
    return bool(status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS)
