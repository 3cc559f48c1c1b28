"""The fault matrix: each row a real fault on real components (simulator over HTTP, MariaDB).

Every row checks (a) the faulty tenant's state shows in its self-metrics and on the landing
page, (b) the other tenant stays fresh, (c) once the fault clears nothing is lost or counted
twice. docs/reliability.md carries the table. SIGKILL, unwritable state and 429 progress are
in tests/test_reliability.py.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests import platform_helpers
from tests.conftest import MARIADB, admin, key
from tests.platform_helpers import ManualClock
from tests.test_reliability import counted

ENDPOINTS = ("processes", "agents", "schedules", "runs")


@dataclass(frozen=True)
class PlatformRow:
    """A platform fault: how to cause it, and what the faulty endpoint must then show."""

    name: str
    faults: dict[str, Any]
    reason: str | None  # expected failure reason of the runs endpoint; None: no failure
    tweak: Callable[[Any], None] | None = None
    pause: float = 0.0  # wall-clock seconds between polls (tokens expire in real time)


PLATFORM_ROWS = [
    PlatformRow("5xx storm", {"error_rate": 1.0, "retry_after": 0}, "http"),
    PlatformRow("429 storm", {"rate_limit_rate": 1.0, "retry_after": 0}, "http"),
    PlatformRow("platform down", {"down": True}, "http"),
    PlatformRow("malformed and truncated JSON", {"malformed_rate": 1.0}, "decode"),
    PlatformRow("platform hangs", {"latency": 3.0}, "timeout"),
    PlatformRow(
        "token endpoint down", {"token_down": True}, "auth", tweak=lambda t: t.tokens.clear()
    ),
    PlatformRow(
        "tokens expire every second",
        {"token_ttl": 1},
        None,
        tweak=lambda t: t.tokens.clear(),
        pause=1.1,
    ),
]


@pytest.fixture
async def platform(make_exporter, tmp_path: Path):
    clock = ManualClock(time.time())
    sim = await platform_helpers.start(2, clock=clock)
    exporter = await make_exporter(sim.config(tmp_path, timeout="1s", interval="1s"))
    yield sim, clock, exporter
    await sim.runner.cleanup()


async def poll(exporter, tenant: str) -> None:
    await exporter.exporter.run_job(exporter.job(tenant, "poll", "platform"))


def success(samples: dict, tenant: str, endpoint: str) -> float:
    return samples[key("cockpit_collection_success", tenant=tenant, source="platform",
                       query=endpoint)]  # fmt: skip


def increase(now: dict, then: dict) -> dict:
    return {k: n - then.get(k, 0) for k, n in now.items() if n - then.get(k, 0)}


@pytest.mark.parametrize("row", PLATFORM_ROWS, ids=lambda r: r.name)
async def test_platform_fault(platform, row: PlatformRow) -> None:
    """One tenant's platform misbehaves; the other is untouched; nothing is lost."""
    sim, clock, exporter = platform
    for tenant in ("t0001", "t0002"):
        await poll(exporter, tenant)
    start = {t: sim.finished(t) for t in ("t0001", "t0002")}
    base = {t: counted(await exporter.samples(), t) for t in ("t0001", "t0002")}
    faulty = sim.tenant("t0001")
    faulty.faults = faulty.faults.model_copy(update=row.faults)
    if row.tweak is not None:
        row.tweak(faulty)
    for _ in range(2):
        clock.now += 90
        await asyncio.sleep(row.pause)
        for tenant in ("t0001", "t0002"):
            await poll(exporter, tenant)
    samples = await exporter.samples()
    # (a) the faulty tenant shows its fault, with the reason, here and on the landing page
    # (the endpoint that meets the fault first gets its reason; later ones in the same poll
    # may find the deadline spent and say `timeout`)
    errors = {
        reason: sum(
            # A reason's series appears at its first failure.
            samples.get(key("cockpit_collection_errors_total", tenant="t0001", source="platform",
                            query=endpoint, reason=reason), 0)
            for endpoint in ENDPOINTS
        )
        for reason in ("timeout", "connect", "http", "auth", "decode")
    }  # fmt: skip
    if row.reason is None:
        assert all(success(samples, "t0001", e) == 1 for e in ENDPOINTS)
        assert sum(errors.values()) == 0, errors
        refreshes = samples[key("cockpit_platform_token_refreshes_total", tenant="t0001")]
        assert refreshes >= 2
    else:
        assert not all(success(samples, "t0001", e) for e in ENDPOINTS)
        assert errors[row.reason] >= 1, errors
        page = await exporter.scrape("/")
        assert page.index("t0001") < page.index("t0002") and "failing" in page
    # (b) the other tenant stays fresh and exact
    assert all(success(samples, "t0002", e) == 1 for e in ENDPOINTS)
    assert increase(counted(samples, "t0002"), base["t0002"]) == increase(
        sim.finished("t0002"), start["t0002"]
    )
    # (c) the fault clears: everything that happened meanwhile is counted exactly once
    faulty.faults = type(faulty.faults)()  # every fault off again
    clock.now += 90
    for _ in range(3):
        await poll(exporter, "t0001")
        samples = await exporter.samples()
        if success(samples, "t0001", "runs") == 1:
            break
        await asyncio.sleep(0.5)
    assert increase(counted(samples, "t0001"), base["t0001"]) == increase(
        sim.finished("t0001"), start["t0001"]
    )


async def test_platform_clock_jumps(platform) -> None:
    """The platform's clock jumps back an hour and forward again: no run counted twice."""
    sim, clock, exporter = platform
    await poll(exporter, "t0001")
    start, base = sim.finished("t0001"), counted(await exporter.samples(), "t0001")
    for jump in (120, -3600, 3600, 300):
        clock.now += jump
        await poll(exporter, "t0001")
    samples = await exporter.samples()
    assert all(success(samples, "t0001", e) == 1 for e in ENDPOINTS)
    assert increase(counted(samples, "t0001"), base) == increase(sim.finished("t0001"), start)


# --- the database side ------------------------------------------------------------------

QUERY = """
queries:
  - name: v
    sql: SELECT SUM(v) AS v FROM t
    timeout: 2s
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
"""


@pytest.fixture
async def two_databases(make_database, make_exporter):
    """Tenant `bad` and tenant `good`, each on its own database with a table `t`."""
    bad, good = make_database(), make_database()
    for db, value in ((bad, 1), (good, 2)):
        db.execute("CREATE TABLE t (v INT)", f"INSERT INTO t VALUES ({value})")
    text = (
        f"tenants:\n  - {{id: bad, mysql: {{dsn: '{bad.dsn}'}}}}\n"
        f"  - {{id: good, mysql: {{dsn: '{good.dsn}'}}}}\n{QUERY.format()}"
    )
    return bad, good, await make_exporter(text)


def sql_state(samples: dict, tenant: str) -> tuple[float, float | None]:
    labels = {"tenant": tenant, "source": "sql", "query": "v"}
    return samples[key("cockpit_collection_success", **labels)], samples.get(
        key("cockpit_v", tenant=tenant)
    )


async def check_database_fault(
    exporter, reason: str, recover: Callable[[], None], last: float | None = None
) -> None:
    await exporter.run_all()
    samples = await exporter.samples()
    # (a) failing; its gauge as the last success left it (none: never one), until
    # stale_after (two intervals)
    assert sql_state(samples, "bad") == (0, last)
    errors = key("cockpit_collection_errors_total", tenant="bad", source="sql", query="v",
                 reason=reason)  # fmt: skip
    assert samples[errors] >= 1
    assert "failing" in await exporter.scrape("/")
    assert sql_state(samples, "good") == (1, 2)  # (b) the other tenant is fresh
    recover()
    # A server that refused connections is retried after its back-off (1 s at first).
    deadline = time.monotonic() + 5
    while True:
        await exporter.run_all()
        state = sql_state(await exporter.samples(), "bad")
        if state == (1, 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert state == (1, 1)  # (c) back, exact


async def test_tenant_database_dropped(two_databases) -> None:
    """The tenant's database disappears while the exporter runs, then comes back."""
    bad, _, exporter = two_databases
    await exporter.run_all()
    admin(f"DROP DATABASE {bad.name}")

    def recreate() -> None:
        admin(f"CREATE DATABASE {bad.name}")
        bad.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (1)")

    # Its runs can no longer select it on the server's shared connections.
    await check_database_fault(exporter, "connect", recreate, last=1)


async def test_max_connections_reached(make_database, make_exporter) -> None:
    """The tenant's database user is at its connection limit (MAX_USER_CONNECTIONS, as a full
    server would refuse): connect errors for that tenant only, until a connection is free."""
    bad, good = make_database(), make_database()
    for db, value in ((bad, 1), (good, 2)):
        db.execute("CREATE TABLE t (v INT)", f"INSERT INTO t VALUES ({value})")
    user = f"ck_{bad.name[-8:]}"
    admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 1",
          f"GRANT SELECT ON {bad.name}.* TO '{user}'@'%'")  # fmt: skip
    holder = pymysql.connect(**(MARIADB | {"user": user, "password": "pw"}), database=bad.name)
    try:
        dsn = f"mysql://{user}:pw@127.0.0.1:3306/{bad.name}"
        exporter = await make_exporter(
            f"tenants:\n  - {{id: bad, mysql: {{dsn: '{dsn}'}}}}\n"
            f"  - {{id: good, mysql: {{dsn: '{good.dsn}'}}}}\n{QUERY.format()}"
        )
        await check_database_fault(exporter, "connect", holder.close)
    finally:
        if holder.open:
            holder.close()
        admin(f"DROP USER '{user}'@'%'")


async def test_query_killed_on_the_server(two_databases) -> None:
    """A DBA kills the running statement: that run fails with `query`, the next succeeds."""
    bad, _, exporter = two_databases
    bad.execute("CREATE TABLE slow (v INT)", "INSERT INTO slow VALUES (1)")
    job = exporter.job("bad", "v")
    object.__setattr__(job.spec.query, "sql", "SELECT SLEEP(1.5) + SUM(v) AS v FROM t")

    async def kill_soon() -> None:
        await asyncio.sleep(0.4)
        for (thread,) in admin(
            "SELECT ID FROM information_schema.PROCESSLIST "
            f"WHERE DB = '{bad.name}' AND INFO LIKE 'SELECT SLEEP%'"
        ):
            admin(f"KILL QUERY {thread}")

    killer = asyncio.create_task(kill_soon())
    await exporter.run("bad", "v")
    await killer
    samples = await exporter.samples()
    errors = key("cockpit_collection_errors_total", tenant="bad", source="sql", query="v",
                 reason="query")  # fmt: skip
    assert samples[errors] == 1 and sql_state(samples, "bad")[0] == 0
    await exporter.run("bad", "v")
    assert sql_state(await exporter.samples(), "bad") == (1, 1)


class TcpProxy:
    """A real TCP hop in front of MariaDB that the test can take down and bring back, as a
    server stopping and restarting would look to the exporter."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # connections die mid-query, as on a server crash
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 3306)
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_database_server_stops_mid_run_and_restarts(make_database, make_exporter) -> None:
    """The tenant's server goes away during a query and refuses connections for a while: that
    tenant fails (`query`, then `connect`), the other stays fresh, and it recovers by itself."""
    from tests.conftest import free_port

    bad, good = make_database(), make_database()
    for db, value in ((bad, 1), (good, 2)):
        db.execute("CREATE TABLE t (v INT)", f"INSERT INTO t VALUES ({value})")
    proxy = TcpProxy(free_port())
    await proxy.start()
    dsn = f"mysql://root@127.0.0.1:{proxy.port}/{bad.name}"
    exporter = await make_exporter(
        f"tenants:\n  - {{id: bad, mysql: {{dsn: '{dsn}'}}}}\n"
        f"  - {{id: good, mysql: {{dsn: '{good.dsn}'}}}}\n{QUERY.format()}"
    )
    await exporter.run_all()
    assert sql_state(await exporter.samples(), "bad") == (1, 1)
    job = exporter.job("bad", "v")
    object.__setattr__(job.spec.query, "sql", "SELECT SLEEP(1) + SUM(v) AS v FROM t")
    running = asyncio.create_task(exporter.run("bad", "v"))
    await asyncio.sleep(0.3)
    await proxy.stop()  # mid-query
    await running
    samples = await exporter.samples()
    assert sql_state(samples, "bad") == (0, 1)  # the last success's gauge, still fresh
    await exporter.run("bad", "v")  # the server is still away: connections are refused
    samples = await exporter.samples()
    errors = {
        reason: samples.get(key("cockpit_collection_errors_total", tenant="bad", source="sql",
                                query="v", reason=reason), 0)
        for reason in ("query", "connect", "timeout")
    }  # fmt: skip
    assert errors["connect"] >= 1 and sum(errors.values()) == 2, errors
    await exporter.run("good", "v")
    assert sql_state(await exporter.samples(), "good") == (1, 2)
    await proxy.start()
    await exporter.run("bad", "v")
    assert sql_state(await exporter.samples(), "bad") == (1, 1)
    await proxy.stop()
