"""Read MySQL replies straight from a connection's stream, many packets per wake-up.

aiomysql reads each packet with two awaited stream reads and parses each field through a
method call; at fleet size that parsing was most of a run's CPU. This reader takes whatever
bytes have arrived, cuts them into packets, and decodes rows in one loop: numbers, dates and
bits as typed text (`cells`: labels keep the server's text), strings as aiomysql does. Once
a connection is read here, aiomysql's own reading must not touch it again: the bytes of the
next reply may already sit in this reader's buffer.
"""

import asyncio
from collections.abc import Callable, Sequence
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


class Reader:
    """Whole packets from one connection's stream; keeps bytes that belong to later replies."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._position = 0

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
    payload = await reader.packet()
    if payload[0] == _ERR:
        raise_mysql_exception(payload)
    if payload[0] != _OK:
        raise pymysql.err.OperationalError(2014, "Command Out of Sync")
    _status_after_ok(payload, driver)


async def read_result(reader: Reader, driver: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A COM_QUERY reply: column names and converted rows (extra result sets read and dropped)."""
    columns, rows, more = await _one_result(reader, driver)
    while more:
        _, _, more = await _one_result(reader, driver)
    return columns, rows


async def _one_result(reader: Reader, driver: Any) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    first = await reader.packet()
    if first[0] == _ERR:
        raise_mysql_exception(first)
    if first[0] == _OK:
        return [], [], _status_after_ok(first, driver)
    count, _ = _length(first, 0)
    # PyMySQL parses the few column definitions; its stubs do not declare their attributes.
    fields: list[Any] = [
        FieldDescriptorPacket(await reader.packet(), driver.encoding) for _ in range(count)
    ]
    await reader.packet()  # the EOF after the column definitions
    converters = [_converter(field, driver) for field in fields]
    rows: list[tuple[Any, ...]] = []
    while True:
        payload = await reader.packet()
        head = payload[0]
        if head == _EOF and len(payload) < 9:
            status = int.from_bytes(payload[3:5], "little")
            driver.server_status = status
            return (
                [f.name for f in fields],
                rows,
                bool(status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS),
            )
        if head == _ERR:
            raise_mysql_exception(payload)
        rows.append(_row(payload, converters))


def _converter(field: Any, driver: Any) -> Converter:
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
    if kind == FIELD_TYPE.JSON:
        encoding: str | None = driver.encoding
    elif kind in _TEXT_TYPES:
        encoding = None if field.charsetnr == _BINARY_CHARSET else driver.encoding
    else:
        encoding = "ascii"
    convert = driver.decoders.get(kind)
    return encoding, (None if convert is through else convert)


def _row(payload: bytes, converters: Sequence[Converter]) -> tuple[Any, ...]:
    values: list[Any] = []
    position = 0
    for encoding, convert in converters:
        head = payload[position]
        if head == _NULL:
            values.append(None)
            position += 1
            continue
        size, position = _length(payload, position)
        data: Any = payload[position : position + size]
        position += size
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
