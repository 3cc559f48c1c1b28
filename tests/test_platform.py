"""The platform source over real HTTP against the simulator: pagination, exact counts, faults."""

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import platform_helpers
from tests.conftest import key
from tests.helpers import eventually
from tests.platform_helpers import ManualClock, RunningSimulator

ENDPOINTS = ("processes", "agents", "schedules", "runs")


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await platform_helpers.start(2)
    yield running
    await running.runner.cleanup()


def stats(exporter, tenant: str, endpoint: str):
    return next(
        s for s in exporter.exporter.runner.stats if (s.tenant, s.query) == (tenant, endpoint)
    )


async def poll(exporter, tenant: str) -> None:
    await exporter.exporter.run_job(exporter.job(tenant, "poll", "platform"))


def ok(exporter, tenant: str) -> bool:
    return all(stats(exporter, tenant, e).success for e in ENDPOINTS)


async def test_pagination_collects_every_item(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """With pages of two items, every agent still arrives exactly once."""
    exporter = await make_exporter(sim.config(tmp_path, page_size=2))
    await poll(exporter, "t0001")
    assert ok(exporter, "t0001"), [s.last_error for s in exporter.exporter.runner.stats]
    samples = await exporter.samples(params={"tenant": "t0001"})
    agents = sim.tenant("t0001").world.agents
    up = [k for k in samples if k[0] == "cockpit_agent_up"]
    assert len(up) == len(agents) > 2
    total = sum(v for (name, _), v in samples.items() if name == "cockpit_agents")
    assert total == len(agents)
    requests = sum(
        v
        for (name, labels), v in samples.items()
        if name == "cockpit_platform_requests_total" and ("query", "agents") in labels
    )
    assert requests == -(-len(agents) // 2)  # one request per page of two


async def test_finished_runs_match_the_simulator_exactly(make_exporter, tmp_path: Path) -> None:
    """Over many polls with overlap and small pages, counters equal the simulator's counts
    of runs finished since the first poll: nothing missed, nothing counted twice."""
    clock = ManualClock(time.time())
    sim = await platform_helpers.start(1, clock=clock)
    try:
        exporter = await make_exporter(sim.config(tmp_path, page_size=3, overlap="5m"))
        before = sim.finished("t0001")
        await poll(exporter, "t0001")
        for _ in range(40):
            clock.now += 45  # platform time moves on: runs queue, start and finish
            await poll(exporter, "t0001")
        assert ok(exporter, "t0001"), [s.last_error for s in exporter.exporter.runner.stats]
        after = sim.finished("t0001")
        samples = await exporter.samples()
    finally:
        await sim.runner.cleanup()
    expected = {k: n - before.get(k, 0) for k, n in after.items()}
    assert sum(expected.values()) > 20, "the simulation should have finished many runs"
    counted = {
        (dict(labels)["process_id"], dict(labels)["status"]): v
        for (name, labels), v in samples.items()
        if name == "cockpit_runs_finished_total" and v
    }
    assert counted == {k: v for k, v in expected.items() if v}
    tracker = exporter.exporter.sources["platform"].tenant("t0001/platform/poll").tracker
    assert len(tracker.counted) < sum(after.values())  # de-duplication memory stays bounded


async def test_retry_after_is_honoured(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 2 is retried after two seconds, not sooner, then succeeds."""
    exporter = await make_exporter(sim.config(tmp_path, timeout="8s", interval="10s"))
    sim.tenant("t0001").faults = sim.tenant("t0001").faults.model_copy(
        update={"rate_limit_rate": 1.0, "retry_after": 2}
    )

    async def heal() -> None:
        await asyncio.sleep(0.5)
        sim.tenant("t0001").faults = sim.tenant("t0001").faults.model_copy(
            update={"rate_limit_rate": 0.0}
        )

    started = time.monotonic()
    await asyncio.gather(poll(exporter, "t0001"), heal())
    assert time.monotonic() - started >= 1.9
    assert ok(exporter, "t0001"), [s.last_error for s in exporter.exporter.runner.stats]
    samples = await exporter.samples()
    assert (
        samples[
            key("cockpit_platform_requests_total", tenant="t0001", query="processes", class_="429")
        ]
        == 1
    )
    assert samples[key("cockpit_platform_retries_total", tenant="t0001", query="processes")] == 1


async def test_retry_after_beyond_the_deadline_fails_fast(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """A Retry-After longer than what is left of the poll ends it with reason http at once."""
    exporter = await make_exporter(sim.config(tmp_path, timeout="3s", interval="10s"))
    sim.tenant("t0001").faults = sim.tenant("t0001").faults.model_copy(
        update={"rate_limit_rate": 1.0, "retry_after": 60}
    )
    started = time.monotonic()
    await poll(exporter, "t0001")
    assert time.monotonic() - started < 2
    processes = stats(exporter, "t0001", "processes")
    assert processes.errors["http"] == 1 and "HTTP 429" in processes.last_error


async def test_expired_and_revoked_tokens_are_replaced(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """Short-lived tokens are refreshed before expiry; a revoked one costs one 401 and a
    fresh token, not a failed poll."""
    exporter = await make_exporter(sim.config(tmp_path))
    tenant = sim.tenant("t0001")
    tenant.faults = tenant.faults.model_copy(update={"token_ttl": 2})
    await poll(exporter, "t0001")
    await asyncio.sleep(2.1)
    await poll(exporter, "t0001")
    assert ok(exporter, "t0001")
    tenant.tokens.clear()  # the platform revokes every token
    await poll(exporter, "t0001")
    assert ok(exporter, "t0001"), [s.last_error for s in exporter.exporter.runner.stats]
    samples = await exporter.samples()
    assert samples[key("cockpit_platform_token_refreshes_total", tenant="t0001")] == 3
    assert (
        samples[
            key("cockpit_platform_requests_total", tenant="t0001", query="processes", class_="4xx")
        ]
        == 1
    )


async def test_wrong_secret_is_an_auth_failure(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """A refused client secret fails every endpoint with reason auth and counts token failures."""
    text = sim.config(tmp_path)
    (tmp_path / "secrets" / "t0001.secret").write_text("wrong\n")
    exporter = await make_exporter(text)
    await poll(exporter, "t0001")
    processes = stats(exporter, "t0001", "processes")
    assert processes.errors["auth"] == 1, processes.last_error
    samples = await exporter.samples()
    assert samples[key("cockpit_platform_token_failures_total", tenant="t0001")] >= 1


async def test_server_errors_are_retried_then_succeed(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """503s are retried with backoff until the platform recovers within the deadline."""
    exporter = await make_exporter(sim.config(tmp_path, timeout="8s", interval="10s"))
    tenant = sim.tenant("t0001")
    tenant.faults = tenant.faults.model_copy(update={"error_rate": 1.0, "retry_after": 0})

    async def heal() -> None:
        await asyncio.sleep(0.6)
        tenant.faults = tenant.faults.model_copy(update={"error_rate": 0.0})

    await asyncio.gather(poll(exporter, "t0001"), heal())
    assert ok(exporter, "t0001"), [s.last_error for s in exporter.exporter.runner.stats]
    samples = await exporter.samples()
    assert (
        samples[
            key("cockpit_platform_requests_total", tenant="t0001", query="processes", class_="5xx")
        ]
        >= 1
    )
    assert samples[key("cockpit_platform_retries_total", tenant="t0001", query="processes")] >= 1


async def test_malformed_bodies_fail_with_decode(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """Bodies that are not the documented JSON fail each endpoint with reason decode,
    naming the endpoint; the process carries on."""
    exporter = await make_exporter(sim.config(tmp_path))
    tenant = sim.tenant("t0001")
    tenant.faults = tenant.faults.model_copy(update={"malformed_rate": 1.0})
    await poll(exporter, "t0001")
    for endpoint in ENDPOINTS:
        endpoint_stats = stats(exporter, "t0001", endpoint)
        assert endpoint_stats.errors["decode"] == 1, endpoint_stats.last_error
        assert endpoint_stats.last_error.startswith(f"{endpoint}:")
    tenant.faults = tenant.faults.model_copy(update={"malformed_rate": 0.0})
    await poll(exporter, "t0001")
    assert ok(exporter, "t0001")


async def test_down_or_slow_tenant_leaves_others_fresh(make_exporter, tmp_path: Path) -> None:
    """One tenant's API is down and another's is slow: the third keeps being polled on time."""
    sim = await platform_helpers.start(3)
    try:
        sim.tenant("t0001").faults = sim.tenant("t0001").faults.model_copy(update={"down": True})
        sim.tenant("t0002").faults = sim.tenant("t0002").faults.model_copy(update={"latency": 5.0})
        exporter = await make_exporter(
            sim.config(tmp_path, interval="1s", timeout="1s"), schedule=True
        )
        fresh = stats(exporter, "t0003", "runs")
        slow = stats(exporter, "t0002", "processes")
        await eventually(lambda: fresh.runs >= 3 and slow.runs >= 1)
        assert fresh.success, fresh.last_error
        assert sum(fresh.errors.values()) == 0
        down = stats(exporter, "t0001", "processes")
        assert not down.success and not slow.success
        assert slow.errors["timeout"] >= 1, slow.last_error
    finally:
        await sim.runner.cleanup()


async def test_metrics_pass_promtool(sim: RunningSimulator, make_exporter, tmp_path: Path) -> None:
    """Platform series are valid exposition with tenant first, names in labels."""
    import shutil
    import subprocess

    exporter = await make_exporter(sim.config(tmp_path))
    await poll(exporter, "t0001")
    await poll(exporter, "t0002")
    text = await exporter.scrape()
    result = await asyncio.to_thread(
        subprocess.run,
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'cockpit_agents{tenant="t0001",pool="pool-general",status="disabled"} 0' in text
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    openmetrics = await exporter.scrape(headers={"Accept": "application/openmetrics-text"})
    kinds = {f.name: f.type for f in text_string_to_metric_families(openmetrics)}
    assert kinds["cockpit_run_duration_seconds"] == "histogram"
    assert kinds["cockpit_platform_request_duration_seconds"] == "histogram"
    assert kinds["cockpit_runs_finished"] == "counter"
    assert 'cockpit_run_duration_seconds_bucket{tenant="t0001",process_id="p0",le="+Inf"}' in text


async def test_client_secrets_never_logged(sim: RunningSimulator, tmp_path: Path) -> None:
    """A real exporter process, debug JSON logs, one right and one wrong secret: neither
    secret appears in its logs, /metrics or landing page."""
    import aiohttp

    from tests.conftest import free_port

    config = tmp_path / "config.yaml"
    config.write_text(sim.config(tmp_path, interval="1s", timeout="1s"))
    wrong = "wrong-secret-0123456789abcdef"
    (tmp_path / "secrets" / "t0002.secret").write_text(wrong + "\n")
    right = sim.tenant("t0001").client_secret
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--config",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "debug",
        "--log.format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    continue
            await asyncio.sleep(1.5)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                landing = await response.text()
    finally:
        if process.returncode is None:
            process.terminate()
        output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert 'cockpit_collection_success{tenant="t0001",source="platform",query="runs"} 1' in metrics
    assert 'query="runs",reason="auth"}' in metrics
    assert "client id or secret refused" in output
    for text in (metrics, landing, output):
        assert right not in text and wrong not in text


async def test_pool_going_offline_shows_in_agent_metrics(
    sim: RunningSimulator, make_exporter, tmp_path: Path
) -> None:
    """The offline_pool fault takes every agent of that pool down, and only that pool."""
    exporter = await make_exporter(sim.config(tmp_path))
    tenant = sim.tenant("t0001")
    pool = tenant.world.agents[0].pool
    tenant.faults = tenant.faults.model_copy(update={"offline_pool": pool})
    sim.simulator.world(tenant)  # the next tick applies it
    tenant.world.advance(tenant.world.clock + 2)
    await poll(exporter, "t0001")
    samples = await exporter.samples(params={"tenant": "t0001"})
    in_pool = [a for a in tenant.world.agents if a.pool == pool]
    offline = samples[key("cockpit_agents", tenant="t0001", pool=pool, status="offline")]
    assert offline == len(in_pool)
    ups = {
        dict(labels)["agent_id"]: v
        for (name, labels), v in samples.items()
        if name == "cockpit_agent_up" and dict(labels)["pool"] == pool
    }
    assert ups == {a.id: 0 for a in in_pool}
    other = [a for a in tenant.world.agents if a.pool != pool and a.status in ("online", "busy")]
    assert other, "agents of other pools stay up"


def test_simulator_is_deterministic_for_a_seed() -> None:
    """The same seed and clock give the same world and events; another seed differs."""
    from exporter.simulator.world import build_world

    start = 1_800_000_000.0
    one, two, other = (build_world("t0001", s, start) for s in (5, 5, 6))
    for world in (one, two, other):
        world.advance(start + 900)
    assert [(a.name, a.pool, a.status) for a in one.agents] == [
        (a.name, a.pool, a.status) for a in two.agents
    ]
    assert one.finished == two.finished and sum(one.finished.values()) > 0
    assert [(r.id, r.status, r.updated_at) for r in one.runs.values()] == [
        (r.id, r.status, r.updated_at) for r in two.runs.values()
    ]
    assert [(r.id, r.status) for r in one.runs.values()] != [
        (r.id, r.status) for r in other.runs.values()
    ]


def test_simulator_in_flight_index_matches_the_runs() -> None:
    """After two platform hours of queue timeouts and quiet agents, the per-pool queues hold
    exactly the queued runs (oldest first, none past the timeout) and `running` the running."""
    from exporter.simulator.world import QUEUE_TIMEOUT, build_world

    start = 1_800_000_000.0
    worlds = [build_world(f"t{i:04d}", 7, start) for i in range(1, 21)]
    for world in worlds:
        world.advance(start + 7200)
        queued = {r.id for r in world.runs.values() if r.status == "queued"}
        assert {i for q in world.queues.values() for i in q} == queued
        assert set(world.running) == {r.id for r in world.runs.values() if r.status == "running"}
        for pool, queue in world.queues.items():
            times = [r.queued_at for r in queue.values()]
            assert times == sorted(times), pool
            assert all(world.clock - t < QUEUE_TIMEOUT for t in times), pool
    assert sum(len(q) for w in worlds for q in w.queues.values()) > 0, "some pool is short"
    assert sum(w.finished[(p.id, "cancelled")] for w in worlds for p in w.processes) > 0


def test_simulator_warm_up_is_platform_time_before_the_first_request() -> None:
    """`warm_up` runs the world that long before `start`: none gives an empty world; an hour
    gives a world at `start` with an hour of finished runs behind it."""
    from exporter.simulator.world import build_world

    start = 1_800_000_000.0
    cold, hour = build_world("t0001", 5, start, 0), build_world("t0001", 5, start, 3600)
    assert cold.clock == hour.clock == start
    assert not cold.runs and not cold.finished
    earliest = min(r.queued_at for r in hour.runs.values())
    assert start - 3600 <= earliest < start - 3000
    assert sum(hour.finished.values()) > sum(build_world("t0001", 5, start).finished.values())


def test_an_invalid_item_is_named_by_its_index_and_field() -> None:
    """A page validated whole still says which item and which field is wrong."""
    import pytest

    from exporter.errors import CollectionError
    from exporter.sources.platform.models import Run, parse_items

    good = {"id": "r1", "process_id": "p1", "status": "finished",
            "updated_at": "2026-12-01T00:00:05Z"}  # fmt: skip
    assert [r.id for r in parse_items("runs", Run, [good, dict(good, id="r2")])] == ["r1", "r2"]
    with pytest.raises(CollectionError) as caught:
        parse_items("runs", Run, [good, good, dict(good, status=5)])
    assert caught.value.reason == "decode"
    assert "runs: invalid item: items[2].status: Input should be a valid string" in str(
        caught.value
    )
