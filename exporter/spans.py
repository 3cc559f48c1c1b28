"""What collection code needs of tracing, through OpenTelemetry's API only (cheap to import).

Sources open spans with `tracer()`; when tracing is off (the default) it is a no-op tracer
and every span costs a function call. exporter/tracing.py installs the SDK's pipeline.
"""

import os
from collections.abc import MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import propagate, trace

from exporter.exposition import Family

DROPPED = Family(
    "cockpit_exporter_spans_dropped_total",
    "counter",
    "Spans of kept traces that never reached the OTLP collector (queue full, export failed).",
)


class Pipeline(Protocol):
    """The running SDK pipeline, as collection code sees it."""

    tracer: trace.Tracer

    def kept(self, trace_id: int) -> bool:
        """Whether the trace is (or will be) exported."""
        ...


_NO_OP = trace.NoOpTracer()
_running: list[Pipeline] = []


def endpoint_from(flag: str | None) -> str | None:
    """The OTLP/HTTP traces URL: the flag, else the standard variables; None when off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if flag:
        return flag if urlsplit(flag).path not in ("", "/") else flag.rstrip("/") + "/v1/traces"
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def install(pipeline: Pipeline) -> None:
    """Make `pipeline` the one spans go to (tracing.start does this)."""
    _running.append(pipeline)


def uninstall(pipeline: Pipeline) -> None:
    """Stop sending spans to `pipeline`."""
    if pipeline in _running:
        _running.remove(pipeline)


def tracer() -> trace.Tracer:
    """The running pipeline's tracer, else a no-op one."""
    return _running[-1].tracer if _running else _NO_OP


def span(name: str, **options: Any) -> AbstractContextManager[trace.Span]:
    """`start_as_current_span` of the running pipeline; when tracing is off, nothing at all.

    Off, the API's no-op tracer would still make a span object and switch the context for
    every HTTP request: here it costs one check.
    """
    if not _running:
        return nullcontext(trace.INVALID_SPAN)
    return _running[-1].tracer.start_as_current_span(name, **options)


def on() -> bool:
    """Whether tracing is on."""
    return bool(_running)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids as lowercase hex, or None outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def kept_trace_id() -> str | None:
    """The current run's trace id, if that trace is exported (an exemplar may point at it)."""
    if not _running:  # tracing off: no context lookup per run
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not _running[-1].kept(context.trace_id):
        return None
    return trace.format_trace_id(context.trace_id)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add W3C `traceparent` (and `tracestate`) of the current span to outgoing headers."""
    if _running:
        propagate.inject(headers)
