"""The HTTP surface: tenant filtering, gzip, OpenMetrics, health, readiness, landing page."""

import asyncio
import gzip
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter.server import wants_openmetrics
from tests.conftest import ScratchDatabase, key, parse_samples
from tests.helpers import two_tenants

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@pytest.fixture
async def exporter(database: ScratchDatabase, make_exporter):
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1),(2,'ops','done',2)")
    running = await make_exporter(two_tenants(database.dsn))
    await running.run_all()
    return running


async def test_tenant_filter_returns_only_those_tenants(exporter) -> None:
    """?tenant= keeps the named tenants' series (repeatable) plus exporter-wide ones."""
    only_acme = parse_samples(await exporter.scrape(params={"tenant": "acme"}))
    tenants = {dict(labels).get("tenant") for _, labels in only_acme}
    assert tenants == {"acme", None}
    assert key("cockpit_work_items", tenant="acme", queue="billing", status="new") in only_acme
    both = parse_samples(await exporter.scrape(params=[("tenant", "acme"), ("tenant", "globex")]))
    assert {dict(labels).get("tenant") for _, labels in both} == {"acme", "globex", None}


async def test_unknown_tenant_is_a_client_error(exporter) -> None:
    """Asking for a tenant that does not exist is a 400 naming it."""
    response = await exporter.get(params={"tenant": "nobody"})
    assert response.status == 400
    assert "unknown tenant: nobody" in await response.text()


def without_runtime(text: str) -> str:
    """The exposition minus process_* and python_* lines, whose values change every scrape."""
    runtime = ("process_", "python_", "# HELP process_", "# TYPE process_", "# HELP python_",
               "# TYPE python_")  # fmt: skip
    return "".join(line for line in text.splitlines(True) if not line.startswith(runtime))


async def test_gzip_when_asked(exporter) -> None:
    """Accept-Encoding: gzip gets a gzipped body equal to the plain one (runtime metrics
    aside); the second answer reuses the compressed snapshot and is still whole."""
    plain = without_runtime(await exporter.scrape(headers={"Accept-Encoding": "identity"}))
    response = await exporter.get(headers={"Accept-Encoding": "gzip"}, decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert without_runtime(gzip.decompress(await response.read()).decode()) == plain
    again = await exporter.get(headers={"Accept-Encoding": "gzip"}, decompress=False)
    assert without_runtime(gzip.decompress(await again.read()).decode()) == plain
    assert "process_resident_memory_bytes" in gzip.decompress(await again.read()).decode()


async def test_gzip_is_never_stale_nor_another_answers(exporter, database) -> None:
    """The cached compression follows the data: after a run changes the rows, the gzip
    answer has the new value; an OpenMetrics or a one-tenant scrape in between gets its own
    bytes, never the cached ones of another format or scope."""

    async def unzipped(**kwargs: object) -> str:
        headers = {"Accept-Encoding": "gzip", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        response = await exporter.get(headers=headers, decompress=False, **kwargs)
        return without_runtime(gzip.decompress(await response.read()).decode())

    billing = key("cockpit_work_items", tenant="acme", queue="billing", status="new")
    assert parse_samples(await unzipped())[billing] == 1
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1)")
    await exporter.run_all()
    after = await unzipped()
    assert parse_samples(after)[billing] == 2
    openmetrics = without_runtime(await exporter.scrape(headers={"Accept": OPENMETRICS}))
    assert await unzipped(headers={"Accept": OPENMETRICS}) == openmetrics != after
    only_acme = await unzipped(params={"tenant": "acme"})
    assert 'tenant="globex"' not in only_acme and 'tenant="acme"' in only_acme
    assert await unzipped() == after
    assert 'tenant="globex"' in await unzipped()


async def test_runtime_metrics_for_operators_only(exporter) -> None:
    """process_* and python_* come with unfiltered scrapes, in both formats, and never with a
    tenant's: they describe the process every tenant shares."""
    text = await exporter.scrape()
    assert "process_cpu_seconds_total" in text and "python_info{" in text
    openmetrics = await exporter.scrape(headers={"Accept": OPENMETRICS})
    assert "process_cpu_seconds_total" in openmetrics and openmetrics.endswith("# EOF\n")
    assert openmetrics.count("# EOF") == 1
    assert "process_" not in await exporter.scrape(path="/metrics?tenant=acme")


async def test_openmetrics_by_accept(exporter) -> None:
    """OpenMetrics is served when asked for, and parses strictly, ending in # EOF."""
    response = await exporter.get(headers={"Accept": OPENMETRICS})
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    text = await response.text()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_om(text)}
    assert families["cockpit_collection_runs"].type == "counter"
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples
    }
    assert samples[key("cockpit_work_items", tenant="acme", queue="billing", status="new")] == 1
    plain = await exporter.get()
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;q=0", False),
        ("text/plain;q=0.5, application/openmetrics-text; version=1.0.0; q=0.9", True),
    ],
)
def test_accept_negotiation(accept: str, expected: bool) -> None:
    """Only a non-zero quality for OpenMetrics selects it."""
    assert wants_openmetrics(accept) is expected


async def test_every_tenant_series_has_tenant_first_and_no_timestamps(exporter) -> None:
    """The tenant label comes first on tenant series; samples carry no timestamp."""
    for line in without_runtime(await exporter.scrape()).splitlines():
        # Exporter-wide, not tenant series: the exporter's own and the run-duration histogram.
        if line.startswith(("#", "cockpit_exporter_", "cockpit_collection_duration_seconds")):
            continue
        assert line.split("{", 1)[1].startswith('tenant="'), line
        assert len(line.rsplit("} ", 1)[1].split()) == 1, line


async def test_health_readiness_and_landing(database: ScratchDatabase, make_exporter) -> None:
    """/healthz is always OK; /readyz waits for every job's first run; / lists tenants."""
    running = await make_exporter(two_tenants(database.dsn))
    assert (await running.get("/healthz")).status == 200
    not_ready = await running.get("/readyz")
    assert not_ready.status == 503
    assert "2 job(s) pending" in await not_ready.text()
    await running.run("acme", "work_items")
    assert (await running.get("/readyz")).status == 503
    await running.run("globex", "work_items")
    assert (await running.get("/readyz")).status == 200
    page = await running.scrape("/")
    assert "<td>acme</td>" in page and "<td>globex</td>" in page
    assert 'class="ok">ok<' in page


async def test_readiness_grace_period(database: ScratchDatabase, make_exporter) -> None:
    """After the grace period the exporter is ready even with jobs still pending."""
    running = await make_exporter(two_tenants(database.dsn), ready_grace_period=0.05)
    # The period is counted from the exporter's creation; a fast start can answer within it.
    await asyncio.sleep(0.1)
    assert running.exporter.readiness.pending == 2  # no job has run: only the period passed
    assert (await running.get("/readyz")).status == 200


async def test_malformed_requests_get_4xx(exporter) -> None:
    """Unknown paths and methods are client errors, never server errors."""
    assert (await exporter.get("/nope")).status == 404
    import aiohttp

    async with aiohttp.ClientSession() as session:
        response = await session.post(exporter.url + "/metrics", data=b"x" * 200_000)
        assert 400 <= response.status < 500


@pytest.mark.promtool
async def test_promtool_accepts_real_output(exporter) -> None:
    """`promtool check metrics` finds no problem in a real scrape."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    text = await exporter.scrape()
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


async def raw_request(port: int, payload: bytes) -> bytes:
    """Send raw bytes and return what the server answers (bounded in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), timeout=5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\nxx",
        b"GET /metrics?tenant=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "huge-header", "huge-path", "huge-body", "bad-escape"],
)
async def test_malformed_http_gets_a_4xx_answer(exporter, payload: bytes) -> None:
    """Malformed or oversized requests get a 4xx status line, never a 5xx or a hang."""
    answer = await raw_request(exporter.exporter.port, payload)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
