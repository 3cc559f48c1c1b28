"""OpenTelemetry traces of collection: one trace per run, exported over OTLP/HTTP.

Off unless `--tracing.otlp-endpoint` or an `OTEL_EXPORTER_OTLP_*ENDPOINT` variable is set;
then the global tracer provider is the SDK's and every span the sources open is recorded.

The keep-or-drop decision is taken when a run's root span ends (a tail decision): the
trace id's ratio, or an error anywhere in the run, keeps it. Spans wait for that decision
in a bounded buffer, then go to the SDK's batch processor through a bounded number of
pending spans: a collector that is down or slow costs dropped spans (counted), never memory
or the event loop's time (the export runs in the processor's thread).
"""

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import StatusCode

from exporter import spans
from exporter.logs import Sampled

log = structlog.get_logger(__name__)
TRACER = "cockpit-exporter"
# Pending spans (handed to the batch processor, not yet exported) and spans of one trace
# waiting for its decision: beyond these, spans are dropped and counted.
MAX_PENDING, MAX_SPANS_PER_TRACE, MAX_OPEN_TRACES = 4096, 2048, 4096
_DECISIONS_KEPT = 1024  # decided traces remembered, for spans that end after their root
# A dead collector: one line a minute, not one a batch.
_FAILED_EXPORTS = Sampled("spans not exported", 60.0)
EXPORT_TIMEOUT = 5.0  # seconds per export request, unless OTEL_EXPORTER_OTLP_TIMEOUT says
QUIET = 10.0  # after a failed export, the next batches are dropped unsent this long
# The OTLP library's own way to a session (a credential provider's): ours replaces it.
CREDENTIAL_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


@dataclass
class Tracing:
    """The configured pipeline: a provider, its tail processor, and what was dropped."""

    provider: TracerProvider
    processor: "TailProcessor"

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer(TRACER)

    def kept(self, trace_id: int) -> bool:
        """Whether the trace is (or will be) exported."""
        return self.processor.kept(trace_id)

    @property
    def dropped(self) -> int:
        """Spans of kept traces lost so far."""
        return self.processor.dropped

    def render(self) -> bytes:
        """The dropped-spans counter as a sample line."""
        return f"{spans.DROPPED.name} {self.dropped}\n".encode()

    def shutdown(self) -> None:
        """Export what waits (bounded by the export timeout), then stop the thread."""
        spans.uninstall(self)
        self.provider.shutdown()


def start(endpoint: str, ratio: float, exporter: SpanExporter | None = None) -> Tracing:
    """Install the SDK as the global tracer provider, exporting to `endpoint`."""
    timeout = None if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else EXPORT_TIMEOUT
    sink = exporter or OTLPSpanExporter(endpoint=endpoint, timeout=timeout, session=_session())
    processor = TailProcessor(sink, ratio)
    resource = Resource.create({"service.name": TRACER})  # OTEL_SERVICE_NAME overrides
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(processor)
    # Not the global provider: that can be set once per process, and tests start many.
    tracing = Tracing(provider, processor)
    spans.install(tracing)
    log.info("tracing on", endpoint=_host(endpoint), sample_ratio=ratio)
    return tracing


def _session() -> requests.Session:
    for variable in CREDENTIAL_PROVIDERS:
        if os.environ.get(variable):
            log.warning("tracing credential provider ignored", variable=variable,
                        reason="exports use a session that follows no redirect")  # fmt: skip
    session = requests.Session()
    # A redirect raises (requests looks at its target even when not following it), so the
    # export counts as failed. The OTLP exporter 1.45 takes any 3xx as sent (spans lost
    # uncounted); one that lets requests follow re-sends the body and the OTLP headers (often
    # an API key) on 307 and 308 to wherever the answer points.
    session.max_redirects = 0
    return session


@dataclass
class _Counted(SpanExporter):
    """The OTLP exporter, telling the processor how each batch ended.

    After a failed export, batches are dropped unsent for `QUIET` seconds: a collector that
    is down costs neither the encoding nor the connection attempts of every batch.
    """

    inner: SpanExporter
    done: "TailProcessor"
    quiet_until: float = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export a batch; whatever did not arrive is counted as dropped."""
        if time.monotonic() < self.quiet_until:
            result = SpanExportResult.FAILURE
        else:
            try:
                result = self.inner.export(spans)
            except Exception:  # the SDK's thread must go on; the spans are lost, and counted
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self.quiet_until = time.monotonic() + QUIET
        self.done.exported(len(spans), ok=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        """Stop the inner exporter."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return self.inner.force_flush(timeout_millis)


@dataclass
class TailProcessor(SpanProcessor):
    """Holds each trace's spans until its root ends, then keeps the trace or forgets it."""

    sink: SpanExporter
    ratio: float
    dropped: int = 0
    _open: "OrderedDict[int, list[ReadableSpan]]" = field(default_factory=OrderedDict)
    _decided: "OrderedDict[int, bool]" = field(default_factory=OrderedDict)
    _failed: set[int] = field(default_factory=set)
    _pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._bound = TraceIdRatioBased.get_bound_for_rate(self.ratio)
        self._batch = BatchSpanProcessor(_Counted(self.sink, self), max_queue_size=MAX_PENDING)

    def on_start(self, span: Span, parent_context: object = None) -> None:
        """Nothing to do until the span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        """Buffer the span; at its trace's local root, decide for the whole trace."""
        context = span.context
        if context is None:
            return
        trace_id = context.trace_id
        if span.status.status_code is StatusCode.ERROR:
            self._failed.add(trace_id)
        root = span.parent is None or span.parent.is_remote
        decided = self._decided.get(trace_id)
        if decided is not None and not root:  # ended after its root: the decision stands
            if decided:
                self._hand([span])
            return
        spans = self._open.setdefault(trace_id, [])
        if len(spans) < MAX_SPANS_PER_TRACE:
            spans.append(span)
        else:
            self._drop(1)
        if root:
            self._decide(trace_id)
        elif len(self._open) > MAX_OPEN_TRACES:  # roots that never end: oldest go
            oldest, lost = self._open.popitem(last=False)
            self._failed.discard(oldest)
            self._drop(len(lost))

    def _drop(self, count: int) -> None:
        with self._lock:
            self.dropped += count

    def _decide(self, trace_id: int) -> None:
        spans = self._open.pop(trace_id, [])
        keep = trace_id in self._failed or (trace_id & TraceIdRatioBased.TRACE_ID_LIMIT) < (
            self._bound
        )
        self._failed.discard(trace_id)
        self._decided[trace_id] = keep
        if len(self._decided) > _DECISIONS_KEPT:
            self._decided.popitem(last=False)
        if keep:
            self._hand(spans)

    def kept(self, trace_id: int) -> bool:
        """Whether a trace is (or, by its ratio, will be) exported: exemplars point only there."""
        decided = self._decided.get(trace_id)
        if decided is not None:
            return decided
        return trace_id in self._failed or (trace_id & TraceIdRatioBased.TRACE_ID_LIMIT) < (
            self._bound
        )

    def _hand(self, spans: list[ReadableSpan]) -> None:
        with self._lock:
            room = max(0, MAX_PENDING - self._pending)
            taken = spans[:room]
            self._pending += len(taken)
            self.dropped += len(spans) - len(taken)
        for span in taken:
            self._batch.on_end(span)

    def exported(self, count: int, ok: bool) -> None:
        """A batch left the processor: no longer pending; lost if the export failed."""
        with self._lock:
            self._pending -= count
            if not ok:
                self.dropped += count
        if not ok and _FAILED_EXPORTS.allow("export") is not None:
            log.warning("spans not exported", spans=count, dropped_total=self.dropped)

    def shutdown(self) -> None:
        """Flush the batch processor and stop its thread."""
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is pending now."""
        return self._batch.force_flush(timeout_millis)


def _host(url: str) -> str:
    """Scheme and host of a URL, never its credentials or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
