"""Scrape cost for 100k series: our snapshot store vs prometheus_client.generate_latest.

Both render the same 100 tenants x 1,000 series in the same run. Run: `make bench`.
"""

import asyncio
import statistics
import subprocess
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from exporter import logs
from exporter.exposition import Family
from exporter.store import Snapshot, SnapshotStore
from tests.bench import sized

TENANTS, SERIES_PER_TENANT, ROUNDS = sized((100, 1_000, 20), (2, 50, 2))
FAMILY = Family("cockpit_work_items", "gauge", "Work items by queue and status.")


def series(tenant: int) -> list[tuple[str, str, float]]:
    """The same synthetic rows for both implementations."""
    return [(f"queue{i % 50}", f"status{i // 50}", float(i)) for i in range(SERIES_PER_TENANT)]


def our_store() -> SnapshotStore:
    store = SnapshotStore()
    store.register([FAMILY])
    for t in range(TENANTS):
        lines = "".join(
            f'cockpit_work_items{{tenant="t{t}",queue="{q}",status="{s}"}} {v:g}\n'
            for q, s, v in series(t)
        )
        store.put((f"t{t}", "sql", "q"), Snapshot(f"t{t}", {FAMILY.name: lines.encode()}))
    return store


def client_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge(FAMILY.name, FAMILY.help, ["tenant", "queue", "status"], registry=registry)
    for t in range(TENANTS):
        for q, s, v in series(t):
            gauge.labels(f"t{t}", q, s).set(v)
    return registry


def timed(fn, rounds: int = ROUNDS) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cold_render(store: SnapshotStore) -> None:
    # Replacing one tenant's snapshot invalidates the cache, as every collection run does.
    store.put(("t0", "sql", "q"), Snapshot("t0", {FAMILY.name: b""}))
    store.render(openmetrics=False)


async def http_latency(store: SnapshotStore) -> tuple[float, float]:
    """Median wall time of a full /metrics GET over loopback, client in another process."""
    from aiohttp import web

    from exporter.access import AccessPolicy
    from exporter.readiness import Readiness
    from exporter.server import Endpoints, make_app
    from exporter.webconfig import WebConfig

    policy = AccessPolicy.of(WebConfig())
    app = make_app(
        Endpoints(
            store=store,
            readiness=Readiness(0),
            tenants=lambda: [f"t{t}" for t in range(TENANTS)],
            stats=lambda: [],
            jobs=lambda: [],
            policy=lambda: policy,
        )
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/metrics"
    plain = await _curl_median(url)
    gzipped = await _curl_median(url, "-H", "Accept-Encoding: gzip")
    await runner.cleanup()
    return plain, gzipped


async def _curl_median(url: str, *extra: str) -> float:
    times = []
    for _ in range(ROUNDS):
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", *extra, url,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        times.append(float(out))
    return statistics.median(times)


def main() -> None:
    from exporter.runtime import RuntimeMetrics

    logs.configure("warning", "console")
    store, registry = our_store(), client_registry()
    ours = store.render(openmetrics=False)
    theirs = generate_latest(registry)
    assert ours.count(b"\n") - 2 == theirs.count(b"\n") - 2 == TENANTS * SERIES_PER_TENANT
    cold = timed(lambda: cold_render(store))
    cached = timed(lambda: store.render(openmetrics=False))
    one_tenant = timed(lambda: store.render(openmetrics=False, tenants=frozenset({"t7"})))
    baseline = timed(lambda: generate_latest(registry), rounds=5)
    latency, gzip_latency = asyncio.run(http_latency(our_store()))
    runtime = timed(lambda: RuntimeMetrics().render(openmetrics=False))
    rows = [
        ("prometheus_client.generate_latest", baseline, "baseline"),
        ("ours, render after a change", cold, f"{baseline / cold:.0f}x faster"),
        ("ours, render unchanged (cached)", cached, f"{baseline / cached:.0f}x faster"),
        ("ours, one tenant (?tenant=t7)", one_tenant, "1,000 of the 100,000 series"),
        ("ours, GET /metrics over loopback", latency, f"curl, median of {ROUNDS}"),
        ("ours, the same with gzip", gzip_latency, "the snapshot's compression reused"),
        ("process_/python_ render per scrape", runtime, f"{runtime / latency:.1%} of the GET"),
    ]
    print(f"series: {TENANTS * SERIES_PER_TENANT}, body: {len(ours) / 1e6:.1f} MB")
    for label, seconds, note in rows:
        print(f"{label + ':':36s}{seconds * 1000:9.3f} ms ({note})")


if __name__ == "__main__":
    main()
