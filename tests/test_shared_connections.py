"""Tenant databases on one server share that server's few connections (real MariaDB)."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import pymysql
import pytest

from exporter.config import ConfigError, parse_config
from tests.conftest import MARIADB, ScratchDatabase, admin

VALUE_QUERY = """queries:
  - name: v
    sql: SELECT SUM(v) AS v FROM t
    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]
"""


@pytest.fixture
def user() -> Iterator[str]:
    """A database user of its own, so its connections can be counted in the processlist."""
    name = f"ck_{uuid.uuid4().hex[:10]}"
    admin(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'pw'")
    yield name
    for (thread,) in admin(f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{name}'"):
        with contextlib.suppress(pymysql.MySQLError):  # it may have ended on its own
            admin(f"KILL {thread}")
    admin(f"DROP USER '{name}'@'%'")


def tenant_databases(make_database, user: str, count: int) -> list[ScratchDatabase]:
    """`count` databases, database i holding the value i + 1, readable by `user`."""
    databases = [make_database() for _ in range(count)]
    for i, db in enumerate(databases):
        db.execute("CREATE TABLE t (v INT)", f"INSERT INTO t VALUES ({i + 1})")
        admin(f"GRANT SELECT ON {db.name}.* TO '{user}'@'%'")
    return databases


def config(user: str, databases: list[ScratchDatabase], defaults: str = "") -> str:
    tenants = "".join(
        f"  - {{id: t{i}, mysql: {{dsn: 'mysql://{user}:pw@127.0.0.1:3306/{db.name}'}}}}\n"
        for i, db in enumerate(databases)
    )
    return f"defaults: {{timeout: 5s{defaults}}}\ntenants:\n{tenants}{VALUE_QUERY}"


def connections_of(user: str) -> int:
    rows = admin(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'")
    return int(rows[0][0])


def value(samples, tenant: str) -> float | None:
    return samples.get(("cockpit_v", frozenset({("tenant", tenant)})))


async def test_two_tenants_alternating_on_one_connection_get_their_own_rows(
    make_database, make_exporter, user: str
) -> None:
    """One connection, two tenants' same query in turn: each run reads its own database."""
    databases = tenant_databases(make_database, user, 2)
    exporter = await make_exporter(config(user, databases, ", max_connections_per_server: 1"))
    threads = set()
    for _ in range(3):
        for tenant, expected in (("t0", 1), ("t1", 2)):
            await exporter.run(tenant, "v")
            assert value(await exporter.samples(), tenant) == expected
            threads |= {
                row[0]
                for row in admin(
                    f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
                )
            }
    assert len(threads) == 1, "both tenants should have used the one shared connection"
    server = exporter.exporter.sources["sql"].built.engines.servers[0]
    assert server.open == 1


async def test_the_cap_bounds_connections_whatever_the_tenant_count(
    make_database, make_exporter, user: str
) -> None:
    """30 tenant databases run at once under a cap of 3: never more than 3 connections."""
    databases = tenant_databases(make_database, user, 30)
    exporter = await make_exporter(config(user, databases, ", max_connections_per_server: 3"))
    jobs = exporter.exporter.runner.jobs()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await asyncio.to_thread(connections_of, user))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    # Slow each run a little so the runs really overlap.
    for job in jobs:
        object.__setattr__(job.spec.query, "sql", "SELECT SLEEP(0.05) + SUM(v) AS v FROM t")
    await asyncio.gather(*(exporter.exporter.run_job(job) for job in jobs))
    watcher.cancel()
    samples = await exporter.samples()
    assert [value(samples, f"t{i}") for i in range(30)] == [i + 1 for i in range(30)]
    assert 1 <= peak <= 3, peak
    assert connections_of(user) <= 3


async def test_idle_connections_above_one_are_closed_after_the_idle_timeout(
    make_database, make_exporter, user: str
) -> None:
    databases = tenant_databases(make_database, user, 8)
    exporter = await make_exporter(
        config(user, databases, ", max_connections_per_server: 4, idle_timeout: 1s")
    )
    jobs = exporter.exporter.runner.jobs()
    for job in jobs:
        object.__setattr__(job.spec.query, "sql", "SELECT SLEEP(0.1) + SUM(v) AS v FROM t")
    await asyncio.gather(*(exporter.exporter.run_job(job) for job in jobs))
    assert connections_of(user) == 4
    await asyncio.sleep(1.5)  # idle 1 s, and the closes run as tasks
    assert connections_of(user) == 1, "one idle connection stays for the next run"
    await exporter.run("t3", "v")
    assert value(await exporter.samples(), "t3") == 4


async def test_a_refusing_server_is_backed_off_without_a_reconnect_storm(
    make_database, make_exporter, user: str
) -> None:
    """The user at its connection limit (as a server answering 1040 would): runs fail with
    `connect`, and the exporter tries at most about once a second while it lasts."""
    databases = tenant_databases(make_database, user, 10)
    admin(f"ALTER USER '{user}'@'%' WITH MAX_USER_CONNECTIONS 1")
    holder = pymysql.connect(**(MARIADB | {"user": user, "password": "pw"}))
    exporter = await make_exporter(config(user, databases))
    before = _aborted_connects()
    started = time.monotonic()
    for _ in range(20):  # 200 runs over about 2 s
        await asyncio.gather(*(exporter.run(f"t{i}", "v") for i in range(10)))
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    attempts = _aborted_connects() - before
    stats = exporter.stats("t0", "sql", "v")
    assert stats.errors["connect"] >= 15 and not stats.success
    assert "max_user_connections" in stats.last_error
    # One attempt, then 1 s and 2 s of back-off: a few refused connections, not 200.
    assert 1 <= attempts <= elapsed + 2, (attempts, elapsed)
    holder.close()
    deadline = time.monotonic() + 6
    while not exporter.stats("t0", "sql", "v").success and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        await asyncio.gather(*(exporter.run(f"t{i}", "v") for i in range(10)))
    samples = await exporter.samples()
    assert [value(samples, f"t{i}") for i in range(10)] == [i + 1 for i in range(10)]


def _aborted_connects() -> int:
    """Connections the server refused (MAX_USER_CONNECTIONS counts here)."""
    rows = admin("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
    return int(rows[0][1])


async def test_a_timeout_kills_the_query_and_never_returns_the_connection(
    make_database, make_exporter, user: str
) -> None:
    """With every connection busy on a hung statement, the timeout still kills it."""
    databases = tenant_databases(make_database, user, 2)
    exporter = await make_exporter(
        config(user, databases, ", max_connections_per_server: 1").replace(
            "timeout: 5s", "timeout: 1s"
        )
    )
    object.__setattr__(exporter.job("t0", "v").spec.query, "sql", "SELECT SLEEP(30) AS v")
    started = time.monotonic()
    await exporter.run("t0", "v")
    assert time.monotonic() - started < 5
    assert exporter.stats("t0", "sql", "v").errors["timeout"] == 1
    await asyncio.sleep(0.3)
    sleeping = admin(
        f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}' "
        "AND INFO LIKE 'SELECT SLEEP%'"
    )
    assert sleeping[0][0] == 0, "the hung statement should have been killed"
    object.__setattr__(exporter.job("t0", "v").spec.query, "sql", "SELECT SUM(v) AS v FROM t")
    await exporter.run("t1", "v")
    await exporter.run("t0", "v")
    samples = await exporter.samples()
    assert (value(samples, "t0"), value(samples, "t1")) == (1, 2)


@pytest.mark.parametrize("cap", ["0", "-1"])
def test_a_cap_below_one_is_a_config_error(cap: str) -> None:
    text = f"defaults: {{max_connections_per_server: {cap}}}\ntenants: [{{id: a}}]\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, "c.yaml")
    assert any(p.startswith("defaults.max_connections_per_server:") for p in error.value.problems)
    text = f"servers: {{'db:3306': {{max_connections: {cap}}}}}\ntenants: [{{id: a}}]\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, "c.yaml")
    assert any("servers.db:3306.max_connections" in p for p in error.value.problems), error.value


def test_a_server_override_applies_to_its_tenants_only() -> None:
    text = (
        "defaults: {max_connections_per_server: 4}\n"
        "servers: {'db1:3306': {max_connections: 9, idle_timeout: 2m}}\n"
        "tenants:\n"
        "  - {id: a, mysql: {dsn: 'mysql://u@db1/a'}}\n"
        "  - {id: b, mysql: {dsn: 'mysql://u@db1:3306/b'}}\n"
        "  - {id: c, mysql: {dsn: 'mysql://u@db2:3306/c'}}\n" + VALUE_QUERY
    )
    specs = {job.tenant: job.database for job in parse_config(text, "c.yaml").jobs}
    assert (specs["a"].max_connections, specs["a"].idle_timeout) == (9, 120)
    assert specs["a"].pool_key == specs["b"].pool_key != specs["c"].pool_key
    assert (specs["c"].max_connections, specs["c"].idle_timeout) == (4, 60)
    assert (specs["a"].database, specs["b"].database) == ("a", "b")
    with pytest.raises(ConfigError) as error:
        parse_config(text.replace("'db1:3306'", "'db1'"), "c.yaml")
    assert any("servers" in p and "host:port" in p for p in error.value.problems), error.value


async def test_batched_runs_each_read_their_own_database(
    make_database, make_exporter, user: str
) -> None:
    """Runs due together go out in one write per connection; each still reads its own
    database, also when one of them is refused in the middle of a batch."""
    databases = tenant_databases(make_database, user, 12)
    exporter = await make_exporter(config(user, databases, ", max_connections_per_server: 1"))
    jobs = exporter.exporter.runner.jobs()
    source = exporter.exporter.sources["sql"].built
    for _ in range(2):  # the first round measures each job; the second one batches them
        await asyncio.gather(*(exporter.exporter.run_job(job) for job in jobs))
    assert len(source._quick) == 12, "every quick job should now share batches"
    admin(f"DROP DATABASE {databases[5].name}")
    pipeline = next(iter(source.engines._pipelines.values()))
    sizes: list[int] = []
    take = pipeline._take_batch

    def recording() -> list:
        batch = take()
        sizes.append(len(batch))
        return batch

    pipeline._take_batch = recording
    await asyncio.gather(*(exporter.exporter.run_job(job) for job in jobs))
    assert max(sizes) > 1, sizes
    samples = await exporter.samples()
    expected = {f"t{i}": i + 1 for i in range(12) if i != 5}
    assert {t: value(samples, t) for t in expected} == expected
    assert value(samples, "t5") == 6  # as its last success left it, while that is fresh
    stats = exporter.stats("t5", "sql", "v")
    assert stats.errors["connect"] == 1 and "cannot use database" in stats.last_error
    assert exporter.exporter.sources["sql"].built.engines.servers[0].open == 1


async def test_the_wire_reader_keeps_the_servers_text(make_database) -> None:
    """Every column type, NULLs, long and multi-byte strings, a reply larger than one read:
    the pipeline's own reader gives exactly the text the server sent (what aiomysql gives
    without converters), numbers, dates and bits typed so values convert by column type."""
    import aiomysql
    from sqlalchemy import make_url

    from exporter.config import DatabaseSpec
    from exporter.sources.sql.servers import Servers

    db = make_database()
    db.execute(
        "CREATE TABLE k (i INT, b BIGINT UNSIGNED, d DECIMAL(12,4), f DOUBLE, fl FLOAT,"
        " s VARCHAR(400), t TEXT, bl BLOB, vb VARBINARY(20), dt DATETIME(3), da DATE,"
        " tm TIME, ts TIMESTAMP NULL, j JSON, e ENUM('x','y'), bit1 BIT(8), y YEAR)",
        "INSERT INTO k VALUES (-5, 18446744073709551615, 12345678.1234, 1.5e-7, 0.25,"
        " REPEAT('é', 300), 'text', x'00ff10', x'cafe', '2026-11-27 03:04:05.678',"
        " '2026-11-27', '-12:30:00', NULL, '{\"a\": [1, 2]}', 'y', b'10100101', 2026)",
        "INSERT INTO k (i) VALUES (NULL)",
        "INSERT INTO k (i, s) SELECT seq, REPEAT('x', 300) FROM seq_1_to_400",
    )
    spec = DatabaseSpec(make_url(db.dsn.replace("mysql://", "mysql+aiomysql://")), 2, 60.0)
    servers = Servers()
    try:
        _, pipeline = servers.get(spec)
        request = pipeline.submit(db.name, "SELECT * FROM k ORDER BY i", (), 10.0, alone=True)
        result = await request.future
        columns, rows = result.columns, result.rows()
    finally:
        await servers.close()
    conn = await aiomysql.connect(**MARIADB, db=db.name, conv={})  # no decoding: the text
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT * FROM k ORDER BY i")
            expected = await cursor.fetchall()
            names = [c[0] for c in cursor.description]
    finally:
        conn.close()
    assert columns == names
    assert list(rows) == list(expected)
    assert len(rows) == 402
    kinds = [type(v).__name__ for v in rows[1]]
    assert kinds == ["Integer", "Integer", "Real", "Real", "Real", "str", "str", "bytes",
                     "bytes", "Moment", "Day", "Span", "NoneType", "str", "str", "Bits",
                     "Integer"]  # fmt: skip


async def test_a_connection_killed_between_runs_costs_no_run_even_at_a_cap_of_one(
    make_database, make_exporter, user: str
) -> None:
    """The only connection dies while idle (server restart, wait_timeout): the runs queued
    on it go to a fresh one, none fails."""
    databases = tenant_databases(make_database, user, 3)
    exporter = await make_exporter(config(user, databases, ", max_connections_per_server: 1"))
    await asyncio.gather(*(exporter.run(f"t{i}", "v") for i in range(3)))
    for (thread,) in admin(f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"):
        admin(f"KILL {thread}")
    await asyncio.gather(*(exporter.run(f"t{i}", "v") for i in range(3)))
    samples = await exporter.samples()
    assert [value(samples, f"t{i}") for i in range(3)] == [1, 2, 3]
    for i in range(3):
        stats = exporter.stats(f"t{i}", "sql", "v")
        assert stats.runs == 2 and sum(stats.errors.values()) == 0, stats.last_error
    assert connections_of(user) == 1


async def test_a_request_that_cannot_be_bound_fails_alone(make_database) -> None:
    """A parameter the driver cannot escape fails that run with `query`; the connection and
    the runs batched with it go on."""
    from sqlalchemy import make_url

    from exporter.config import DatabaseSpec
    from exporter.errors import CollectionError
    from exporter.sources.sql.servers import Servers

    db = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (7)")
    spec = DatabaseSpec(make_url(db.dsn.replace("mysql://", "mysql+aiomysql://")), 1, 60.0)
    servers = Servers()
    try:
        _, pipeline = servers.get(spec)
        sql = "SELECT v + %s AS v FROM t"
        bad = pipeline.submit(db.name, sql, ({"no": "dicts"},), 5.0, alone=False)
        good = pipeline.submit(db.name, sql, (1,), 5.0, alone=False)
        with pytest.raises(CollectionError, match="cannot bind the query parameters"):
            await bad.future
        assert (await good.future).rows() == [("8",)]  # the server's text, typed
    finally:
        await servers.close()


DUPLICATE_QUERY = """queries:
  - name: v
    sql: SELECT 'same' AS k, v FROM t UNION ALL SELECT 'same', v FROM t
    metrics: [{name: cockpit_v, type: gauge, help: V., labels: [k], value: v}]
"""


async def test_an_unchanged_reply_reuses_its_series_and_any_change_renders_anew(
    make_database, make_exporter, user: str
) -> None:
    """A reply the same byte for byte as the job's last one reuses the series rendered then
    (rows skipped are still counted each run); a changed value, or a column type changed under
    the same text, renders anew; another tenant's identical data is never taken for its own.
    The same reply is recognised by its bytes (the job's kept result set is taken as is)."""
    databases = tenant_databases(make_database, user, 2)
    databases[1].execute("UPDATE t SET v = 1")  # the same rows as t0, in another database
    tenants = "".join(
        f"  - {{id: t{i}, mysql: {{dsn: 'mysql://{user}:pw@127.0.0.1:3306/{db.name}'}}}}\n"
        for i, db in enumerate(databases)
    )
    exporter = await make_exporter(
        f"defaults: {{timeout: 5s}}\ntenants:\n{tenants}{DUPLICATE_QUERY}"
    )
    source = exporter.exporter.sources["sql"].built

    def sample(tenant: str) -> float | None:
        return samples.get(("cockpit_v", frozenset({("tenant", tenant), ("k", "same")})))

    await exporter.run("t0", "v")
    first, (whole,) = source._last["t0/sql/v"][2:]
    await exporter.run("t0", "v")
    await exporter.run("t1", "v")
    samples = await exporter.samples()
    assert source._last["t0/sql/v"][2] is first, "an unchanged reply should reuse its part"
    assert whole is not None and source._last["t0/sql/v"][3] == (whole,), "not recognised"
    assert source._last["t1/sql/v"][2] is not first
    assert source._last["t1/sql/v"][3] != (whole,)
    assert (sample("t0"), sample("t1")) == (1, 1)
    assert exporter.stats("t0", "sql", "v").duplicates == 2  # one per run, reused or not

    databases[0].execute("UPDATE t SET v = 7")  # the same length: only the bytes differ
    await exporter.run("t0", "v")
    samples = await exporter.samples()
    assert sample("t0") == 7
    changed = source._last["t0/sql/v"][2]
    assert changed is not first and source._last["t0/sql/v"][3] != (whole,)

    databases[0].execute("ALTER TABLE t MODIFY v BIGINT")  # same text, another column type
    await exporter.run("t0", "v")
    samples = await exporter.samples()
    assert sample("t0") == 7
    assert source._last["t0/sql/v"][2] is not changed


def test_a_malformed_reply_is_the_drivers_error_not_a_crash() -> None:
    """Column definitions or rows that do not parse raise pymysql's OperationalError (a
    failed run with reason `query`), whenever they are first decoded."""
    from types import SimpleNamespace

    from exporter.sources.sql import wire

    driver = SimpleNamespace(encoding="utf8", decoders={})
    bad_header = wire.Result([b"\x01", b"\x03def"], [], driver)
    with pytest.raises(pymysql.err.OperationalError, match="Malformed packet"):
        _ = bad_header.columns
    # A valid definition of one VARCHAR column (as MariaDB sends it), then a row whose
    # length prefix runs past its end.
    field = b"\x03def\x01d\x01t\x01t\x01v\x01v\x0c\x21\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00"
    truncated = wire.Result([b"\x01", field], [b"\xfc\xff\xffabc"], driver)
    assert truncated.columns == ["v"]
    with pytest.raises(pymysql.err.OperationalError, match="Malformed packet"):
        truncated.rows()
