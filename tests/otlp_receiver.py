"""An OTLP/HTTP traces receiver on loopback, decoding with the official protobuf messages."""

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One span as the collector received it."""

    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    status: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    service: str


@dataclass
class Receiver:
    """Collects every span POSTed to /v1/traces."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        for resource in message.resource_spans:
            attributes = {a.key: _value(a.value) for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                self.spans += [
                    self._span(s, str(attributes.get("service.name"))) for s in scope.spans
                ]
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    @staticmethod
    def _span(span: Any, service: str) -> ReceivedSpan:
        return ReceivedSpan(
            name=span.name,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent=span.parent_span_id.hex(),
            kind=span.kind,
            status=span.status.code,
            attributes={a.key: _value(a.value) for a in span.attributes},
            events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
            service=service,
        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """Every received span of one trace."""
        return [s for s in self.spans if s.trace_id == trace_id]

    def roots(self, name: str) -> list[ReceivedSpan]:
        """Received root spans called `name`."""
        return [s for s in self.spans if s.name == name and not s.parent]

    async def start(self) -> "Receiver":
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
