"""MySQL cells as the server sends them: the text is the label, the type says the number.

The text protocol sends every non-string value as text (`16777200`, `1.500000`,
`2024-02-29 12:34:56`). A label keeps that text, so series read the same as in the database
and in the peers (sql_exporter, query-exporter); a value is converted by its column type:
integers exactly, TIMESTAMP and DATETIME as Unix seconds (the session's time zone is UTC, so a
TIMESTAMP is its instant and a DATETIME is read as UTC), DATE as midnight UTC, TIME as signed
seconds, BIT(n) as the integer of its bits.
"""

import datetime as dt

from pymysql.constants import FIELD_TYPE

from exporter.exposition import format_value


class Integer(str):
    """An integer column's text (TINYINT … BIGINT, YEAR): exact at any size."""

    __slots__ = ()


class Real(str):
    """A FLOAT, DOUBLE or DECIMAL column's text."""

    __slots__ = ()


class Moment(str):
    """A DATETIME or TIMESTAMP column's text, `YYYY-MM-DD HH:MM:SS[.ffffff]`, read as UTC."""

    __slots__ = ()


class Day(str):
    """A DATE column's text, `YYYY-MM-DD`."""

    __slots__ = ()


class Span(str):
    """A TIME column's text, `[-]HHH:MM:SS[.ffffff]`: a signed duration."""

    __slots__ = ()


class Bits(bytes):
    """A BIT(n) column's bytes, most significant first."""

    __slots__ = ()

    def __str__(self) -> str:
        return str(int.from_bytes(self, "big"))


TYPES: dict[int, type[str]] = {
    **dict.fromkeys(
        (FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG,
         FIELD_TYPE.INT24, FIELD_TYPE.YEAR), Integer,
    ),
    **dict.fromkeys(
        (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE, FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL), Real
    ),
    **dict.fromkeys((FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP), Moment),
    **dict.fromkeys((FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE), Day),
    FIELD_TYPE.TIME: Span,
}  # fmt: skip


def number_text(cell: str | Bits) -> str | None:
    """The sample value of a typed cell, exactly as written to /metrics; None if not typed."""
    if isinstance(cell, Integer):
        return str(int(cell))  # validates; keeps every digit past 2**53
    if isinstance(cell, Bits):
        return str(cell)
    seconds = _seconds(cell)
    return None if seconds is None else format_value(seconds)


def _seconds(cell: str) -> float | None:
    if isinstance(cell, Real):
        return float(cell)
    if isinstance(cell, Moment):
        return dt.datetime.fromisoformat(cell).replace(tzinfo=dt.UTC).timestamp()
    if isinstance(cell, Day):
        moment = dt.datetime.combine(dt.date.fromisoformat(cell), dt.time(), dt.UTC)
        return moment.timestamp()
    if isinstance(cell, Span):
        sign = -1.0 if cell.startswith("-") else 1.0
        hours, minutes, seconds = cell.lstrip("-").split(":")
        return sign * (int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    return None
