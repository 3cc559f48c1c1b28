"""Prometheus text 0.0.4 and OpenMetrics 1.0 encoding helpers."""

import math
import re
from dataclasses import dataclass
from functools import cached_property

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS_EOF = b"# EOF\n"
SCHEDULED_NOTE = " Collected on a schedule, not at scrape time."
# Lone UTF-16 surrogates (JSON's "\ud800", truncated UTF-16) have no UTF-8 form.
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_label_value(value: str) -> str:
    """Escape a label value for both exposition formats; lone surrogates become U+FFFD."""
    if not value.isascii():
        value = _SURROGATE.sub("\ufffd", value)
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(value: str) -> str:
    """Escape a HELP text for the Prometheus text format (backslash and newline)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def escape_openmetrics_help(value: str) -> str:
    """Escape a HELP text for OpenMetrics, whose grammar escapes `"` too."""
    return escape_help(value).replace('"', '\\"')


def format_value(value: float) -> str:
    """Render a sample value; integers keep a short form both parsers accept."""
    if isinstance(value, int):
        return str(value)
    if value - value == 0.0:  # finite (for an infinity or NaN it is NaN): three per run
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def label_block(pairs: list[tuple[str, str]]) -> str:
    """Render `{a="x",b="y"}` from (name, already escaped value) pairs."""
    return "{" + ",".join(f'{name}="{value}"' for name, value in pairs) + "}"


@dataclass(frozen=True)
class Family:
    """A metric family's identity and help; sample lines are rendered elsewhere."""

    name: str
    type: str
    help: str

    @cached_property
    def prometheus_header(self) -> bytes:
        """HELP and TYPE lines in text format 0.0.4."""
        help_text = escape_help(self.help)
        kind = "gauge" if self.type == "stateset" else self.type  # 0.0.4 has no stateset
        return f"# HELP {self.name} {help_text}\n# TYPE {self.name} {kind}\n".encode()

    @cached_property
    def openmetrics_header(self) -> bytes:
        """TYPE and HELP lines in OpenMetrics, where counter families drop `_total`."""
        name = self.name.removesuffix("_total") if self.type == "counter" else self.name
        help_text = escape_openmetrics_help(self.help)
        return f"# TYPE {name} {self.type}\n# HELP {name} {help_text}\n".encode()

    def header(self, openmetrics: bool) -> bytes:
        """The header for the requested format."""
        return self.openmetrics_header if openmetrics else self.prometheus_header
