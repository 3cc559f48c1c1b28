"""Traces of collection, received over OTLP/HTTP and decoded with opentelemetry-proto."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from exporter import observers, spans
from exporter.spans import endpoint_from
from exporter.tracing import TailProcessor
from tests import platform_helpers
from tests.conftest import ScratchDatabase, free_port, write
from tests.helpers import WORK_ITEMS, start_prometheus, two_tenants
from tests.otlp_receiver import ERROR, Receiver

CLIENT, INTERNAL = 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.stop()


async def _flush(exporter: Any) -> None:
    """Export what the run left (the batch thread posts to the receiver on this loop)."""
    tracing = exporter.exporter.observers.tracing
    assert tracing is not None
    assert await asyncio.to_thread(tracing.processor.force_flush, 10_000)


async def test_a_platform_poll_is_one_trace_covering_token_pages_and_429_retries(
    make_exporter: Callable[..., Any], receiver: Receiver, tmp_path: Path
) -> None:
    sim = await platform_helpers.start(count=1)
    try:
        tenant = sim.tenant("t0001")
        # Small pages: several per endpoint; a third of the calls rate limited, retried at once.
        tenant.faults = tenant.faults.model_copy(
            update={"page_size": 7, "rate_limit_rate": 0.3, "retry_after": 0}
        )
        exporter = await make_exporter(
            sim.config(tmp_path, timeout="20s"), tracing_otlp_endpoint=receiver.url
        )
        await exporter.exporter.run_job(exporter.job("t0001", "poll", "platform"))
        await _flush(exporter)
    finally:
        await sim.runner.cleanup()
    roots = receiver.roots("collect platform")
    assert len(roots) == 1
    root = roots[0]
    assert root.attributes["cockpit.tenant"] == "t0001"
    assert root.attributes["cockpit.outcome"] == "success"
    assert root.service == "cockpit-exporter"
    trace = receiver.trace(root.trace_id)
    calls = [s for s in trace if s.name.startswith("call ")]
    assert {s.attributes["cockpit.endpoint"] for s in calls} >= {"token", "runs", "agents"}
    # Every page is a call of its own: the runs endpoint took several.
    assert sum(1 for s in calls if s.name == "call runs") >= 2
    requests = [s for s in trace if s.kind == CLIENT]
    assert {s.attributes["http.request.method"] for s in requests} == {"GET", "POST"}
    limited = [s for s in requests if s.attributes.get("http.response.status_code") == 429]
    assert limited and all(s.status == ERROR for s in limited)
    retries = [e for s in calls for e in s.events if e[0] == "retry"]
    assert retries and {e[1]["error.type"] for e in retries} == {"429"}
    # Each request hangs under its call, each call under the run: one tree.
    ids = {s.span_id for s in trace}
    assert all(s.parent in ids for s in trace if s is not root)
    assert all(s.parent in {c.span_id for c in calls} for s in requests)
    # The platform saw the same trace: traceparent on every request, token fetch included.
    seen = [e["traceparent"].split("-")[1] for e in sim.simulator.traceparents]
    assert len(seen) == len(requests) and set(seen) == {root.trace_id}
    assert "client_secret" not in json.dumps([s.attributes for s in trace])


async def test_a_sql_run_on_a_shared_connection_has_queue_and_statement_spans(
    make_exporter: Callable[..., Any], receiver: Receiver, database: ScratchDatabase
) -> None:
    database.execute("INSERT INTO work_items VALUES (1, 'q', 'open', 1.5)")
    exporter = await make_exporter(two_tenants(database.dsn), tracing_otlp_endpoint=receiver.url)
    await asyncio.gather(exporter.run("acme", "work_items"), exporter.run("globex", "work_items"))
    await _flush(exporter)
    roots = receiver.roots("collect sql")
    assert {r.attributes["cockpit.tenant"] for r in roots} == {"acme", "globex"}
    for root in roots:
        trace = receiver.trace(root.trace_id)
        (queue,) = [s for s in trace if s.name == "sql queue"]
        (statement,) = [s for s in trace if s.name == "SELECT"]
        assert queue.parent == statement.parent == root.span_id
        assert statement.kind == CLIENT
        assert statement.attributes["db.system.name"] == "mysql"
        assert statement.attributes["db.namespace"] == database.name
        assert "FROM work_items" in statement.attributes["db.query.text"]
        assert statement.attributes["server.port"] == 3306


async def test_with_the_collector_down_runs_go_on_and_dropped_spans_are_counted(
    make_exporter: Callable[..., Any], database: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observers, "PUBLISH_EVERY", 0.2)
    nobody = f"http://127.0.0.1:{free_port()}"
    exporter = await make_exporter(two_tenants(database.dsn), tracing_otlp_endpoint=nobody)
    for _ in range(3):
        await exporter.run("acme", "work_items")
    assert exporter.stats("acme", "sql", "work_items").success
    tracing = exporter.exporter.observers.tracing
    await asyncio.to_thread(tracing.processor.force_flush, 10_000)
    assert tracing.dropped >= 6  # three runs of at least a root, a queue and a statement span

    async def scraped() -> float:
        samples = await exporter.samples()
        return samples.get(("cockpit_exporter_spans_dropped_total", frozenset()), 0.0)

    for _ in range(40):  # published every PUBLISH_EVERY
        if await scraped() >= 6:
            break
        await asyncio.sleep(0.25)
    assert await scraped() >= 6


async def prometheus_exemplars(directory: Path, port: int) -> set[str]:
    """Trace ids of the duration exemplars a real Prometheus (exemplar storage on) scraped."""
    prometheus_port = free_port()
    prometheus = await start_prometheus(
        directory,
        f"127.0.0.1:{port}",
        prometheus_port,
        flags=("--enable-feature=exemplar-storage",),
    )
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/query_exemplars"
    query = {"query": "cockpit_collection_duration_seconds_bucket", "start": "0",
             "end": str(time.time() + 60)}  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(60):  # the first scrape waits for target discovery (about 5 s)
                async with session.get(url, params=query) as response:
                    data = (await response.json())["data"]
                found = {e["labels"]["trace_id"] for s in data for e in s["exemplars"]}
                if found:
                    return found
                await asyncio.sleep(0.5)
    finally:
        prometheus.terminate()
        await prometheus.wait()
    return set()


def _span(tracer: Any, name: str, failed: bool = False) -> None:
    with tracer.start_as_current_span(name) as root:
        with tracer.start_as_current_span("child"):
            pass
        if failed:
            root.set_status(StatusCode.ERROR)


def test_the_ratio_keeps_a_share_of_traces_and_every_failed_one() -> None:
    sink = InMemorySpanExporter()
    processor = TailProcessor(sink, ratio=0.0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(20):
        _span(tracer, "ok")
    _span(tracer, "failed", failed=True)
    processor.force_flush()
    assert sorted(s.name for s in sink.get_finished_spans()) == ["child", "failed"]
    sink.clear()
    processor.ratio = 1.0
    processor.__post_init__()
    _span(tracer, "ok")
    processor.force_flush()
    assert sorted(s.name for s in sink.get_finished_spans()) == ["child", "ok"]
    provider.shutdown()


def test_the_endpoint_comes_from_the_flag_or_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert endpoint_from(None) is None  # off by default
    assert endpoint_from("http://c:4318") == "http://c:4318/v1/traces"
    assert endpoint_from("http://c:4318/custom") == "http://c:4318/custom"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")
    assert endpoint_from(None) == "http://base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/v1/traces")
    assert endpoint_from(None) == "http://t:4318/v1/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert endpoint_from("http://c:4318") is None
    assert not spans.on() and spans.current_ids() is None


async def test_a_failed_run_at_ratio_zero_is_traced_logged_and_its_exemplar_points_at_it(
    receiver: Receiver, tmp_path: Path, database: ScratchDatabase
) -> None:
    broken = WORK_ITEMS.replace("FROM work_items", "FROM no_such_table")
    config = write(
        tmp_path / "c.yaml",
        two_tenants(database.dsn, broken).replace(
            "interval: 30s, timeout: 5s", "interval: 5s, timeout: 4s"
        ),
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json",
        "--tracing.otlp-endpoint", receiver.url, "--tracing.sample-ratio", "0",
        stderr=subprocess.PIPE, env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
    try:
        async with aiohttp.ClientSession() as session:

            async def exemplar() -> re.Match[str] | None:
                try:
                    async with session.get(url, headers=openmetrics) as response:
                        text = await response.text()
                except aiohttp.ClientError:
                    return None
                return re.search(
                    r'cockpit_collection_duration_seconds_bucket\{source="sql",le="[^"]+"\} \d+'
                    r' # \{trace_id="([0-9a-f]{32})"\} [0-9.e+-]+ [0-9.]+\n',
                    text,
                )

            found = None
            for _ in range(60):
                found = await exemplar()
                if found:
                    break
                await asyncio.sleep(0.5)
            assert found, "no exemplar on the duration histogram"
            async with session.get(url) as response:  # the Prometheus text format has none
                assert " # {" not in await response.text()
        trace_id = found.group(1)
        for _ in range(40):  # the batch goes out within its schedule delay (0.2 s here)
            if receiver.trace(trace_id):
                break
            await asyncio.sleep(0.25)
        stored = await prometheus_exemplars(tmp_path, port)
        root = [s for s in receiver.trace(trace_id) if not s.parent]
        assert root and root[0].status == ERROR and root[0].attributes["error.type"] == "query"
        assert not receiver.roots("discover tenants")  # none configured
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await process.communicate()
    # Prometheus 2.42 parsed them: every stored exemplar names an exported trace.
    assert stored and all(receiver.trace(t) for t in stored)
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("trace_id") == trace_id]
    assert failed, "no log line carries the run's trace id"
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["span_id"]) for line in failed)
    outside = [line for line in lines if line["event"] == "exporter started"]
    assert outside and "trace_id" not in outside[0]


async def test_a_collector_that_redirects_gets_no_second_request_and_the_spans_count_as_dropped(
    make_exporter: Callable[..., Any],
    receiver: Receiver,
    database: ScratchDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 307 or 308 is a failed export: nothing goes where it points (a POST re-sent there
    would carry the OTLP headers, an API key here), and its spans count as dropped, not as
    sent (the OTLP exporter alone takes any 3xx as success)."""
    from aiohttp import web

    hits: list[str | None] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.headers.get("x-api-key"))
        status = 307 if len(hits) % 2 else 308
        return web.Response(status=status, headers={"Location": f"{receiver.url}/v1/traces"})

    app = web.Application()
    app.router.add_post("/v1/traces", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret")
    try:
        exporter = await make_exporter(
            two_tenants(database.dsn), tracing_otlp_endpoint=f"http://127.0.0.1:{port}"
        )
        await exporter.run("acme", "work_items")
        tracing = exporter.exporter.observers.tracing
        await asyncio.to_thread(tracing.processor.force_flush, 10_000)
    finally:
        await runner.cleanup()
    assert hits == ["s3cret"]  # the configured endpoint got the export, with its header
    assert receiver.requests == 0  # and nothing went where the answer pointed
    assert tracing.dropped >= 3  # a root, a queue and a statement span


def test_a_credential_provider_variable_is_named_as_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OTLP library's credential provider would bring a session of its own, following
    what it likes: ours is used, and the variable is named in a warning, not silently lost."""
    from structlog.testing import capture_logs

    from exporter import tracing

    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER", "vault")
    with capture_logs() as logs:
        session = tracing._session()
    assert session.max_redirects == 0
    assert [(e["event"], e["variable"]) for e in logs] == [
        ("tracing credential provider ignored",
         "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"),
    ]  # fmt: skip
