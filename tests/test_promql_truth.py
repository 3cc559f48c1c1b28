"""Metrics an SRE can trust in PromQL: gauges withdrawn once stale, staleness kept across
restarts, counters from zero, ids that hold across renames, one definition of a failed run,
durations as histograms. The real simulator over HTTP, a real Prometheus where PromQL is the
question."""

import asyncio
import re
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from exporter.errors import PLATFORM_REASONS
from exporter.sources.platform.models import Schedule
from exporter.sources.platform.render import render_schedules
from exporter.sources.platform.runs import RunTracker
from exporter.sources.platform.source import ENDPOINTS
from exporter.state import FileStore, State
from exporter.store import Snapshot, SnapshotStore
from tests import platform_helpers
from tests.conftest import free_port, key
from tests.helpers import start_prometheus
from tests.platform_helpers import ManualClock

ROOT = Path(__file__).resolve().parent.parent
# Point-in-time families of the platform: served only while their data is fresh.
GAUGES = (
    "cockpit_runs_queued", "cockpit_runs_running", "cockpit_platform_runs_lag_seconds",
    "cockpit_agent_up", "cockpit_agents", "cockpit_schedule_enabled", "cockpit_process_info",
)  # fmt: skip
COUNTERS = ("cockpit_runs_finished_total", "cockpit_run_duration_seconds_count")


def of(samples: dict, name: str, tenant: str = "t0001") -> dict:
    """The samples of one family for one tenant."""
    return {k: v for k, v in samples.items() if k[0] == name and ("tenant", tenant) in k[1]}


def self_metric(name: str, query: str = "runs", source: str = "platform") -> tuple:
    return key(name, tenant="t0001", source=source, query=query)


async def poll(exporter) -> None:
    await exporter.exporter.run_job(exporter.job("t0001", "poll", "platform"))


async def test_a_down_api_keeps_counters_and_withdraws_gauges_after_stale_after(
    make_exporter, tmp_path: Path
) -> None:
    """The tenant's API answers 503: its gauges stay as last seen until `stale_after`, then go;
    run counters stay; success is 0. A restart during the outage serves the same last success
    and failing-since timestamps as before it, and no old gauge, before and after its first
    failed poll."""
    clock = ManualClock(time.time())
    sim = await platform_helpers.start(1, clock=clock)
    try:
        state = tmp_path / "state"
        config = sim.config(tmp_path, interval="1s", timeout="1s", stale_after="3s")
        first = await make_exporter(config, state_dir=state)
        await poll(first)
        clock.now += 600
        await poll(first)
        fresh_until = time.monotonic() + 3
        healthy = await first.samples()
        assert all(of(healthy, name) for name in GAUGES + COUNTERS)
        sim.tenant("t0001").faults = sim.tenant("t0001").faults.model_copy(update={"down": True})
        await poll(first)
        failing = await first.samples()
        assert failing[self_metric("cockpit_collection_success")] == 0
        if time.monotonic() < fresh_until - 0.5:  # the machine was quick enough to look
            assert all(of(failing, n) == of(healthy, n) for n in GAUGES)
        await asyncio.sleep(max(0.0, fresh_until + 0.2 - time.monotonic()))
        stale = await first.samples()  # no run since: the expiry is the scrape's own
        assert [n for n in GAUGES if of(stale, n)] == []
        assert all(of(stale, n) == of(healthy, n) for n in COUNTERS)
        last = self_metric("cockpit_collection_last_success_timestamp_seconds")
        since = self_metric("cockpit_collection_failing_since_timestamp_seconds")
        assert stale[last] == healthy[last] and stale[since] >= stale[last]
        await first.exporter.stop()

        second = await make_exporter(config, state_dir=state)
        restarted = await second.samples()
        assert (restarted[last], restarted[since]) == (stale[last], stale[since])
        assert restarted[self_metric("cockpit_collection_success")] == 0
        await poll(second)
        polled = await second.samples()
        assert (polled[last], polled[since]) == (stale[last], stale[since])
        assert [n for n in GAUGES if of(polled, n)] == []
        assert all(of(polled, n) == of(healthy, n) for n in COUNTERS)  # durable, served
    finally:
        await sim.runner.cleanup()


async def test_wrong_credentials_from_the_start_serve_no_last_success(
    make_exporter, tmp_path: Path
) -> None:
    """A tenant that never succeeded has no last-success series (never a 0 that reads as
    1970), a failing-since timestamp, and every error reason from zero but `auth`."""
    sim = await platform_helpers.start(1)
    try:
        text = sim.config(tmp_path)
        (tmp_path / "secrets" / "t0001.secret").write_text("wrong\n")
        exporter = await make_exporter(text)
        before = await exporter.samples()
        assert self_metric("cockpit_collection_success") not in before  # not run yet
        assert self_metric("cockpit_collection_failing_since_timestamp_seconds") not in before
        await poll(exporter)
        samples = await exporter.samples()
    finally:
        await sim.runner.cleanup()
    for endpoint in ENDPOINTS:
        assert self_metric("cockpit_collection_last_success_timestamp_seconds", endpoint) not in (
            samples
        )
        assert samples[self_metric("cockpit_collection_success", endpoint)] == 0
        assert samples[self_metric("cockpit_collection_failing_since_timestamp_seconds", endpoint)]
        reasons = {
            r: samples[
                key(
                    "cockpit_collection_errors_total",
                    tenant="t0001",
                    source="platform",
                    query=endpoint,
                    reason=r,
                )
            ]
            for r in PLATFORM_REASONS
        }
        assert reasons == dict.fromkeys(PLATFORM_REASONS, 0) | {"auth": 1}


async def test_a_healthy_tenant_serves_every_counter_from_zero(
    make_exporter, tmp_path: Path
) -> None:
    """Error reasons, request outcome classes, retries and token failures of a healthy tenant
    exist at 0, so increase() and rate() see the first event; durations are histograms and
    the time spent collecting grows with every run."""
    sim = await platform_helpers.start(1)
    try:
        exporter = await make_exporter(sim.config(tmp_path))
        await poll(exporter)
        first = await exporter.samples()
        await poll(exporter)
        second = await exporter.samples()
        text = await exporter.scrape()
    finally:
        await sim.runner.cleanup()
    for endpoint in ENDPOINTS:
        for reason in PLATFORM_REASONS:
            assert second[key("cockpit_collection_errors_total", tenant="t0001",
                              source="platform", query=endpoint, reason=reason)] == 0  # fmt: skip
        seconds = self_metric("cockpit_collection_seconds_total", endpoint)
        assert second[seconds] > first[seconds] > 0
    for query in ("token", *ENDPOINTS):
        for outcome in ("3xx", "4xx", "429", "5xx", "error"):
            requests = key("cockpit_platform_requests_total", tenant="t0001", query=query,
                           class_=outcome)  # fmt: skip
            assert second[requests] == 0
        assert second[key("cockpit_platform_retries_total", tenant="t0001", query=query)] == 0
    assert second[key("cockpit_platform_token_failures_total", tenant="t0001")] == 0
    assert "# TYPE cockpit_platform_request_duration_seconds histogram" in text
    bucket = key("cockpit_platform_request_duration_seconds_bucket", tenant="t0001",
                 query="runs", le="+Inf")  # fmt: skip
    assert second[bucket] == 2
    assert "# TYPE cockpit_collection_duration_seconds histogram" in text
    count = key("cockpit_collection_duration_seconds_count", source="platform")
    assert second[count] == first[count] + len(ENDPOINTS)
    assert of(second, "cockpit_collection_last_duration_seconds")


async def test_a_renamed_process_keeps_its_series(make_exporter, tmp_path: Path) -> None:
    """Renaming a process changes only its info series: every run counter of the tenant keeps
    its labels, and the next finished run increments the same series."""
    clock = ManualClock(time.time())
    sim = await platform_helpers.start(1, clock=clock)
    try:
        exporter = await make_exporter(sim.config(tmp_path, overlap="5m"))
        await poll(exporter)
        clock.now += 300
        await poll(exporter)
        before = await exporter.samples()
        world = sim.tenant("t0001").world
        process = world.processes[0]
        process.name = "renamed on the platform"
        finished = sum(n for (p, _), n in world.finished.items() if p == process.id)
        for _ in range(20):
            clock.now += 120
            await poll(exporter)
            if sum(n for (p, _), n in world.finished.items() if p == process.id) > finished:
                break
        after = await exporter.samples()
    finally:
        await sim.runner.cleanup()
    counters = of(before, "cockpit_runs_finished_total")
    assert counters.keys() == of(after, "cockpit_runs_finished_total").keys()
    mine = {k: v for k, v in counters.items() if ("process_id", process.id) in k[1]}
    assert sum(after[k] for k in mine) > sum(mine.values()), "a run of it finished since"
    info = {dict(k[1])["name"] for k in of(after, "cockpit_process_info")
            if ("process_id", process.id) in k[1]}  # fmt: skip
    assert info == {"renamed on the platform"}


def test_a_cancelled_last_run_is_neither_success_nor_failure() -> None:
    """`cancelled` is its own outcome: no last-run-success sample; failed and timed out are 0."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    schedules = [
        Schedule(
            id=f"s{i}",
            name="n",
            process_id="p",
            cron="* * * * *",
            enabled=True,
            last_run_at=moment,
            last_run_status=status,
        )
        for i, status in enumerate(("succeeded", "failed", "timed_out", "cancelled", None))
    ]
    body = render_schedules("acme", schedules).bodies()["cockpit_schedule_last_run_success"]
    assert body.decode().splitlines() == [
        'cockpit_schedule_last_run_success{tenant="acme",schedule_id="s0"} 1',
        'cockpit_schedule_last_run_success{tenant="acme",schedule_id="s1"} 0',
        'cockpit_schedule_last_run_success{tenant="acme",schedule_id="s2"} 0',
    ]
    rules = (ROOT / "alerts" / "cockpit.rules.yml").read_text()
    assert set(re.findall(r'status=~"([^"]+)"', rules)) == {"failed|timed_out"}


def test_processes_the_platform_no_longer_lists_are_forgotten_after_forget_after() -> None:
    """Counters of a deleted process stay while rate() needs them, then go; one that still
    has runs waiting is kept."""
    tracker = RunTracker(overlap=60, lookback=0, history=3600)
    tracker.listed(["p1", "p2", "p3"], now=1000, forget_after=86400)
    tracker.finished[("p1", "failed")] = 3
    tracker.finished[("p2", "succeeded")] = 5
    tracker.active["r1"] = tracker.active.get("r1") or _queued("p3")
    tracker.listed(["p2"], now=1000 + 86400, forget_after=86400)
    assert set(tracker.seen) == {"p1", "p2", "p3"}  # not older than forget_after yet
    tracker.listed(["p2"], now=1001 + 86400, forget_after=86400)
    assert set(tracker.seen) == {"p2", "p3"}
    assert dict(tracker.finished) == {("p2", "succeeded"): 5}
    restored = RunTracker(overlap=60, lookback=0, history=3600)
    restored.restore(tracker.to_state())
    assert restored.seen == tracker.seen and restored.finished == tracker.finished


def _queued(process: str):  # type: ignore[no-untyped-def]
    from exporter.sources.platform.runs import ActiveRun

    return ActiveRun(process, "queued", 0.0, 2e9)


def test_a_snapshot_with_gauges_is_replaced_at_its_time() -> None:
    """The store swaps in the gauge-less snapshot when its time is up, at the next render,
    and a newer put cancels the swap."""
    from exporter.exposition import Family

    store = SnapshotStore()
    store.register([Family("cockpit_g", "gauge", "G."), Family("cockpit_c_total", "counter", "C.")])
    whole = Snapshot("a", {"cockpit_g": b'cockpit_g{tenant="a"} 1\n',
                           "cockpit_c_total": b'cockpit_c_total{tenant="a"} 2\n'})  # fmt: skip
    without = Snapshot("a", {"cockpit_c_total": b'cockpit_c_total{tenant="a"} 2\n'})
    store.put(("a", "s", "q"), whole, time.time() + 0.2, without)
    assert b"cockpit_g{" in store.render(False)
    time.sleep(0.25)
    assert b"cockpit_g{" not in store.render(False) and b"cockpit_c_total{" in store.render(False)
    store.put(("a", "s", "q"), whole, time.time() + 0.2, without)
    store.put(("a", "s", "q"), whole, time.time() + 60, without)
    time.sleep(0.25)
    assert b"cockpit_g{" in store.render(False)


async def test_a_corrupt_health_record_is_counted_and_the_job_starts_unknown(
    make_exporter, tmp_path: Path
) -> None:
    """A health record that is not what the runner wrote costs that job its restored
    timestamps (counted as a read error), nothing else."""
    state = tmp_path / "state"
    text = one_query(tmp_path / "t.db", "30s")
    first = await make_exporter(text, state_dir=state)
    await first.run("acme", "v")
    await first.exporter.stop()  # flushes the health of every job
    store = State(FileStore(state))
    health = await store.load("acme/sql/v#health")
    assert health is not None and health["parts"]["v"]["success"] is True
    await store.save("acme/sql/v#health", {"parts": {"v": {"success": "yes"}}})
    second = await make_exporter(text, state_dir=state)
    samples = await second.samples()
    labels = {"tenant": "acme", "source": "sql", "query": "v"}
    assert key("cockpit_collection_last_success_timestamp_seconds", **labels) not in samples
    read = key("cockpit_exporter_state_errors_total", tenant="acme", source="sql",
               operation="read")  # fmt: skip
    assert samples[read] == 1


async def test_a_job_that_starts_or_stops_failing_is_written_at_once(
    make_exporter, tmp_path: Path
) -> None:
    """Health is written with the first run, then only now and then, except when the job
    starts or stops failing: that is on disk after the very run, so a restart at the worst
    moment still says since when it fails (or that it no longer does)."""
    state, database = tmp_path / "state", tmp_path / "t.db"
    exporter = await make_exporter(one_query(database, "30s"), state_dir=state)
    store = State(FileStore(state))

    async def written() -> dict[str, object]:
        health = await store.load("acme/sql/v#health")
        assert health is not None
        return dict(health["parts"]["v"])

    await exporter.run("acme", "v")
    first = await written()
    assert first["success"] is True and first["failing_since"] is None
    await exporter.run("acme", "v")
    assert await written() == first  # a success like the last: not written again
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE t")
    await exporter.run("acme", "v")
    failing = await written()
    assert failing["success"] is False and isinstance(failing["failing_since"], float)
    await exporter.run("acme", "v")
    assert await written() == failing  # still failing since the same run
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (v INT)")
    await exporter.run("acme", "v")
    recovered = await written()
    assert recovered["success"] is True and recovered["failing_since"] is None


async def test_every_jobs_health_is_one_record_and_a_crash_restores_the_newer(
    make_exporter, tmp_path: Path, monkeypatch
) -> None:
    """A healthy job's own record is not rewritten run after run: every job's health goes
    into one record every HEALTH_EVERY. A crash (the state directory as it was on disk)
    restores each job from the newer of the two: here the common record's last success."""
    from exporter.sources import runner

    monkeypatch.setattr(runner, "HEALTH_EVERY", 0.0)  # the common record after every run
    state, database = tmp_path / "state", tmp_path / "t.db"
    text = one_query(database, "30s")
    first = await make_exporter(text, state_dir=state)
    store = State(FileStore(state))
    writing = first.exporter.runner
    await first.run("acme", "v")
    own = await store.load("acme/sql/v#health")
    await writing._all_health_writing  # the common record the first run started
    await asyncio.sleep(0.01)
    await first.run("acme", "v")
    await writing._all_health_writing  # the second run's
    latest = first.stats("acme", "sql", "v").last_success
    assert await store.load("acme/sql/v#health") == own  # healthy: not written again
    common = await store.load("#health/0")
    assert common is not None and common["jobs"]["acme/sql/v"]["parts"]["v"] == {
        "success": True, "last_success": latest, "failing_since": None,
    }  # fmt: skip
    assert own is not None and own["parts"]["v"]["last_success"] < latest
    crashed = tmp_path / "crashed"
    shutil.copytree(state, crashed)  # what a crash leaves: no flush at shutdown
    second = await make_exporter(text, state_dir=crashed)
    samples = await second.samples()
    labels = {"tenant": "acme", "source": "sql", "query": "v"}
    assert samples[key("cockpit_collection_last_success_timestamp_seconds", **labels)] == latest


async def test_a_bad_common_health_record_costs_its_jobs_their_timestamps_only(
    make_exporter, tmp_path: Path
) -> None:
    """A newer entry of the common record that is not health: that job's timestamps are not
    restored (a read error, counted for its tenant); one the common record cannot hold
    (its path taken) is a write error, counted for each of its jobs' tenants."""
    state, database = tmp_path / "state", tmp_path / "t.db"
    text = one_query(database, "30s")
    first = await make_exporter(text, state_dir=state)
    await first.run("acme", "v")
    await first.exporter.stop()
    store = State(FileStore(state))
    await store.save("#health/0", {"at": time.time() + 60, "jobs": {"acme/sql/v": {"parts": 1}}})
    second = await make_exporter(text, state_dir=state)
    samples = await second.samples()
    labels = {"tenant": "acme", "source": "sql", "query": "v"}
    assert key("cockpit_collection_last_success_timestamp_seconds", **labels) not in samples
    errors = {"tenant": "acme", "source": "sql"}
    assert samples[key("cockpit_exporter_state_errors_total", **errors, operation="read")] == 1

    await second.exporter.stop()
    (state / "%23health%2F0.json").unlink()
    (state / "%23health%2F0.json").mkdir()  # a rename cannot replace a directory
    third = await make_exporter(text, state_dir=state)
    third.exporter.runner._all_health_due = 0.0
    await third.run("acme", "v")
    await third.exporter.runner._all_health_writing
    await third.run("acme", "v")  # a run publishes its tenant's state errors
    samples = await third.samples()
    assert samples[key("cockpit_exporter_state_errors_total", **errors, operation="write")] == 1


def one_query(database: Path, interval: str) -> str:
    """Config of one tenant with one SQLite query `v` (7) on a new `database`."""
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (v INT)")
        db.execute("INSERT INTO t VALUES (7)")
    return (
        f"tenants:\n  - {{id: acme, mysql: {{dsn: 'sqlite:///{database}'}}}}\n"
        f"queries:\n  - {{name: v, sql: SELECT v FROM t, interval: {interval}, timeout: 1s, "
        "metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]}\n"
    )


async def eventually_async(check: Callable[[], Awaitable[list]], seconds: float = 15) -> None:
    """Wait until `check` returns something."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "Prometheus did not scrape in time"
        await asyncio.sleep(0.2)


async def prometheus_query(session: aiohttp.ClientSession, port: int, expr: str) -> list:
    async with session.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def documented_queries() -> list[str]:
    """The PromQL of docs/metrics.md's useful queries, one per line, comments dropped."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    block = text.split("### Useful queries", 1)[1].split("```promql", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if not line.startswith("#")]


async def test_a_real_prometheus_sees_the_first_error_and_the_staleness(
    make_exporter, tmp_path: Path
) -> None:
    """Prometheus scrapes a job that worked, then failed once: increase() of its error counter
    sees that one error (it existed at 0 before), its gauge goes stale once `stale_after` has
    passed, its last-success timestamp stays; every query docs/metrics.md suggests runs."""
    assert shutil.which("prometheus"), "`make test` installs Debian's prometheus"
    database = tmp_path / "t.db"
    exporter = await make_exporter(one_query(database, "2s"))  # not scheduled: runs by hand
    port = free_port()
    process = await start_prometheus(tmp_path, f"127.0.0.1:{exporter.exporter.port}", port)
    try:
        async with aiohttp.ClientSession() as session:
            # Service discovery hands targets over every 5 s: wait for the first scrape.
            await eventually_async(lambda: prometheus_query(session, port, "up"))
            await exporter.run("acme", "v")
            succeeded = time.monotonic()
            await asyncio.sleep(2.2)  # scraped healthy, every reason at 0
            with sqlite3.connect(database) as db:
                db.execute("ALTER TABLE t RENAME TO gone")
            await exporter.run("acme", "v")  # one failure, the only one
            # Past stale_after (two intervals: 4 s) since the success, and scraped after it.
            await asyncio.sleep(max(0.0, succeeded + 5.5 - time.monotonic()))
            errors = await prometheus_query(
                session, port, 'increase(cockpit_collection_errors_total{reason="query"}[1m])'
            )
            gauge = await prometheus_query(session, port, "cockpit_v")
            age = await prometheus_query(
                session, port, "time() - cockpit_collection_last_success_timestamp_seconds"
            )
            documented = [await prometheus_query(session, port, q) for q in documented_queries()]
    finally:
        process.terminate()
        await process.wait()
    assert exporter.stats("acme", "sql", "v").errors["query"] == 1
    assert errors and float(errors[0]["value"][1]) >= 1, errors
    assert gauge == []  # stale: Prometheus no longer returns it
    assert age and 4 <= float(age[0]["value"][1]) < 60
    assert len(documented) >= 5 and documented[0], "the failing job answers the first query"


async def test_a_jobs_health_record_is_pruned_with_the_job_not_before(tmp_path: Path) -> None:
    """Pruning keeps `<job>#health` while the job is configured, and deletes it with the job."""
    state = State(FileStore(tmp_path / "state"))
    for record in ("acme/sql/v", "acme/sql/v#health", "gone/sql/v#health"):
        await state.save(record, {"n": 1})
    assert await state.prune(["acme/sql/v"], retention=0) == ["gone/sql/v#health"]
    assert await state.load("acme/sql/v#health") == {"n": 1}
    assert sorted(await state.prune([], retention=0)) == ["acme/sql/v", "acme/sql/v#health"]
