"""Prometheus-style durations such as `30s`, `1m30s` or `500ms`."""

import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Return seconds for a duration string like `1m30s`, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(f"expected a duration such as 30s, got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds


def _parse_text(text: str) -> float:
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}: use a number and unit, e.g. 500ms, 30s, 5m")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def stale_after(value: float | None, interval: float, where: str) -> float | None:
    """A job's `stale_after`, checked: shorter than its interval, gauges would blink out."""
    if value is not None and value < interval:
        raise ValueError(
            f"{where}.stale_after: {value:g}s is shorter than the interval ({interval:g}s); "
            "gauges would vanish between two good runs"
        )
    return value
