"""structlog set-up for our events and for the libraries that log through `logging`.

Logs never carry secrets by construction: exceptions are rendered as type, message and
stack only (never frame locals), aiohttp's parse errors lose the raw request bytes they
quote, and any key that names a credential is redacted as a second line of defence.
"""

import logging
import logging.config
import re
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from exporter import spans
from exporter.limits import TokenBucket

log = structlog.get_logger(__name__)
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Keys whose values are credentials whatever an event's author meant to put there.
_SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|secret|token|authorization|credentials?|cookie|api_key)($|_)",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
# Malformed requests are logged at most this often (per second, with this burst).
_BAD_REQUEST_RATE, _BAD_REQUEST_BURST = 1.0, 10


class Sampled:
    """At most one line per `interval` for each key; each line says how many were left out.

    For events a client can cause at will (refused logins, error statuses): the log then
    grows with time, not with the attacker's request rate. Keys are a fixed, small set.
    What the last interval left out is told by `report_left_out` at shutdown.
    """

    def __init__(
        self, what: str, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what  # the lines it samples, as the report at shutdown names them
        self._interval, self._clock = interval, clock
        self._last: dict[str, float] = {}
        self._left_out: Counter[str] = Counter()
        _SAMPLERS.add(self)

    def allow(self, key: str) -> int | None:
        """None to stay silent; else how many lines for `key` were left out before this one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._left_out[key] += 1
            return None
        self._last[key] = now
        return self._left_out.pop(key, 0)

    def take_left_out(self) -> dict[str, int]:
        """Per key, the lines left out since its last line; counted as told from now on."""
        left_out, self._left_out = dict(self._left_out), Counter()
        return left_out


# Every sampler alive, for the report at shutdown (those of a web app that was replaced go
# with it).
_SAMPLERS: "weakref.WeakSet[Sampled]" = weakref.WeakSet()


def report_left_out() -> None:
    """One line per sampler and key whose last lines left out were not told yet (shutdown).

    Without it, a burst's last interval would be lost: its count waits for a next line of
    the same key, which a stopping process never writes.
    """
    for sampler in sorted(_SAMPLERS, key=lambda s: s.what):
        for key, count in sorted(sampler.take_left_out().items()):
            log.info("log lines left out", lines=sampler.what, key=key, suppressed=count)


def trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the span the line is written in (a run, a discovery round)."""
    ids = spans.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of every key that names a credential."""
    for key in event:
        if _SECRET_KEY.search(key):
            event[key] = REDACTED
    return event


class _BadRequestFilter(logging.Filter):
    """Malformed requests logged without their bytes, and at a bounded rate.

    aiohttp logs them with an exception that quotes the raw request (headers included):
    keep the status and the kind of error, drop the bytes, and bound how many such lines
    an attacker can make us write.
    """

    def __init__(self) -> None:
        super().__init__()
        self._bucket = TokenBucket(_BAD_REQUEST_RATE, _BAD_REQUEST_BURST)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not self._bucket.allow():
            return False
        record.msg, record.args = "bad http request: %s %s", (exc.code, type(exc).__name__)
        record.exc_info, record.exc_text, record.levelno = None, None, logging.WARNING
        record.levelname = "WARNING"
        return True


# logfmt as go-kit and slog write it (Prometheus, its exporters): ts, level, caller, msg first.
_CALLER = structlog.processors.CallsiteParameterAdder(
    [structlog.processors.CallsiteParameter.FILENAME, structlog.processors.CallsiteParameter.LINENO]
)


_GO_KIT_ORDER = ["ts", "level", "caller", "msg"]


def _go_kit_keys(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`timestamp` as `ts`, `event` as `msg`, file and line as `caller=file.py:12`."""
    event["ts"] = event.pop("timestamp", None)
    event["msg"] = event.pop("event", "")
    filename, line = event.pop("filename", None), event.pop("lineno", None)
    if filename is not None:
        event["caller"] = f"{filename}:{line}"
    return event


def configure(level: str, fmt: str) -> None:
    """Render every event (ours and APScheduler's/aiohttp's) as console, logfmt or JSON."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    else:
        # Plain text of the stack: dict_tracebacks would add every frame's locals.
        shared.append(structlog.processors.format_exc_info)
        if fmt == "json":
            renderer = structlog.processors.JSONRenderer()
        else:
            shared += [_CALLER, _go_kit_keys]
            renderer = structlog.processors.LogfmtRenderer(
                key_order=["ts", "level", "caller", "msg"]
            )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(shared, renderer, level)


def _route_stdlib(
    shared: list[structlog.typing.Processor], renderer: structlog.typing.Processor, level: str
) -> None:
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        "foreign_pre_chain": [structlog.stdlib.add_logger_name, *shared],
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"structlog": formatter},
            "filters": {"bad_requests": {"()": _BadRequestFilter}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "structlog",
                    "filters": ["bad_requests"],
                }
            },
            "root": {"handlers": ["stderr"], "level": _LEVELS[level]},
            # APScheduler announces every job execution at INFO; our own line covers that.
            # The OpenTelemetry SDK logs every failed span export: the dropped-spans counter
            # and our own sampled line (tracing.py) say it instead.
            "loggers": {
                "apscheduler": {"level": "WARNING"},
                "opentelemetry": {"level": "CRITICAL"},
            },
        }
    )
