"""SQL collection against real MariaDB: exact values, vanishing rows, failures per tenant."""

import asyncio
from collections.abc import Callable

from tests.conftest import ScratchDatabase, admin, free_port, key
from tests.helpers import WORK_ITEMS, eventually, two_tenants

Factory = Callable[..., object]


async def test_exact_values_from_real_tables(database: ScratchDatabase, make_exporter) -> None:
    """Counts and decimal sums arrive exactly, labelled by tenant first."""
    database.execute(
        "INSERT INTO work_items VALUES (1,'billing','new',1.5),(1,'billing','new',2.25),"
        "(1,'reports','done',4),(2,'billing','new',7)"
    )
    exporter = await make_exporter(two_tenants(database.dsn))
    await exporter.run_all()
    text = await exporter.scrape()
    samples = await exporter.samples()
    assert samples[key("cockpit_work_items", tenant="acme", queue="billing", status="new")] == 2
    assert samples[key("cockpit_work_weight", tenant="acme", queue="billing", status="new")] == 3.75
    assert samples[key("cockpit_work_items", tenant="acme", queue="reports", status="done")] == 1
    assert samples[key("cockpit_work_items", tenant="globex", queue="billing", status="new")] == 1
    assert len([k for k in samples if k[0] == "cockpit_work_items"]) == 3
    assert 'cockpit_work_items{tenant="acme",queue="billing",status="new"} 2\n' in text
    assert "Collected on a schedule" in text
    success = key("cockpit_collection_success", tenant="acme", source="sql", query="work_items")
    assert samples[success] == 1
    # The series gauge is in the full set only.
    assert not [k for k in samples if k[0] == "cockpit_collection_series"]


async def test_vanished_rows_vanish(database: ScratchDatabase, make_exporter) -> None:
    """A label set that is gone from the data is gone from /metrics after the next run."""
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1),(1,'reports','new',1)")
    exporter = await make_exporter(two_tenants(database.dsn))
    await exporter.run("acme", "work_items")
    before = await exporter.samples()
    assert key("cockpit_work_items", tenant="acme", queue="reports", status="new") in before
    database.execute("DELETE FROM work_items WHERE queue = 'reports'")
    await exporter.run("acme", "work_items")
    after = await exporter.samples()
    assert key("cockpit_work_items", tenant="acme", queue="reports", status="new") not in after
    assert after[key("cockpit_work_items", tenant="acme", queue="billing", status="new")] == 1


async def test_down_database_fails_only_its_tenant(
    database: ScratchDatabase, make_exporter
) -> None:
    """A tenant whose server refuses connections shows reason=connect; others stay fresh."""
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1)")
    down = f"mysql://root@127.0.0.1:{free_port()}/nothing"
    text = two_tenants(database.dsn).replace(
        f"{{id: globex, mysql: {{dsn: '{database.dsn}'}}", f"{{id: globex, mysql: {{dsn: '{down}'}}"
    )
    exporter = await make_exporter(text)
    await exporter.run_all()
    samples = await exporter.samples()
    labels = {"source": "sql", "query": "work_items"}
    assert samples[key("cockpit_collection_success", tenant="globex", **labels)] == 0
    assert (
        samples[key("cockpit_collection_errors_total", tenant="globex", reason="connect", **labels)]
        == 1
    )
    assert samples[key("cockpit_collection_success", tenant="acme", **labels)] == 1
    assert (
        samples[key("cockpit_collection_last_success_timestamp_seconds", tenant="acme", **labels)]
        > 0
    )
    assert samples[key("cockpit_work_items", tenant="acme", queue="billing", status="new")] == 1
    assert not any(k[0] == "cockpit_work_items" and ("tenant", "globex") in k[1] for k in samples)


SLOW = """
  - name: slow
    sql: SELECT SLEEP(:delay) + 41 AS answer
    timeout: 1s
    metrics:
      - {{name: cockpit_answer, type: gauge, help: Answer., value: answer}}
"""


async def test_timeout_kills_the_query_and_the_next_run_succeeds(
    database: ScratchDatabase, make_exporter
) -> None:
    """A query over its timeout fails with reason=timeout, is killed on the server, and the
    connection is discarded so the next run works."""
    config = (
        f"tenants:\n  - {{id: acme, mysql: {{dsn: '{database.dsn}'}}, params: {{delay: 30}}}}\n"
        f"queries:\n{SLOW.format()}"
    )
    exporter = await make_exporter(config)
    started = asyncio.get_running_loop().time()
    await exporter.run("acme", "slow")
    assert asyncio.get_running_loop().time() - started < 5
    samples = await exporter.samples()
    labels = {"tenant": "acme", "source": "sql", "query": "slow"}
    assert samples[key("cockpit_collection_success", **labels)] == 0
    assert samples[key("cockpit_collection_errors_total", reason="timeout", **labels)] == 1
    await asyncio.sleep(0.3)
    running = admin(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        f"WHERE DB = '{database.name}' AND INFO LIKE 'SELECT SLEEP%'"
    )
    assert running[0][0] == 0, "the timed-out query is still running on the server"
    job = exporter.job("acme", "slow")
    object.__setattr__(job.spec, "params", {"delay": 0})
    await exporter.run("acme", "slow")
    samples = await exporter.samples()
    assert samples[key("cockpit_collection_success", **labels)] == 1
    assert samples[key("cockpit_answer", tenant="acme")] == 41


async def test_slow_tenant_leaves_others_fresh(make_database, make_exporter) -> None:
    """With the schedule running, a tenant stuck on slow queries never delays another."""
    slow_db, fast_db = make_database(), make_database()
    fast_db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (7)")
    config = f"""
tenants:
  - {{id: slow, mysql: {{dsn: '{slow_db.dsn}'}}}}
  - {{id: fast, mysql: {{dsn: '{fast_db.dsn}'}}}}
limits: {{max_concurrent_queries: 2}}
queries:
  - name: sleepy
    sql: SELECT SLEEP(5) AS v
    tenants: [slow]
    interval: 1s
    timeout: 1s
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
  - name: quick
    sql: SELECT v FROM t
    tenants: [fast]
    interval: 1s
    timeout: 1s
    stale_after: 10s  # gauges stay while a loaded machine runs late
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
"""
    exporter = await make_exporter(config, schedule=True)
    stats = {s.tenant: s for s in exporter.exporter.runner.stats}
    await eventually(lambda: stats["fast"].runs >= 3 and stats["slow"].runs >= 1)
    assert stats["fast"].runs >= 3
    assert not any(stats["fast"].errors.values())
    assert stats["fast"].duration < 0.5
    assert stats["slow"].errors["timeout"] >= 1
    samples = await exporter.samples()
    assert samples[key("cockpit_v", tenant="fast")] == 7


async def test_nulls_are_skipped_and_counted(database: ScratchDatabase, make_exporter) -> None:
    """A NULL value yields no series and increments the null counter."""
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',NULL),(1,'ops','new',2)")
    exporter = await make_exporter(two_tenants(database.dsn))
    await exporter.run("acme", "work_items")
    samples = await exporter.samples()
    assert key("cockpit_work_weight", tenant="acme", queue="billing", status="new") not in samples
    assert samples[key("cockpit_work_weight", tenant="acme", queue="ops", status="new")] == 2
    assert samples[key("cockpit_work_items", tenant="acme", queue="billing", status="new")] == 1
    nulls = key(
        "cockpit_collection_null_values_total", tenant="acme", source="sql", query="work_items"
    )
    assert samples[nulls] == 1


DUPES = """
  - name: dupes
    sql: SELECT queue, weight FROM work_items WHERE tenant_id = :tenant_id ORDER BY weight
    metrics:
      - {{name: cockpit_weight, type: gauge, help: W., labels: [queue], value: weight}}
"""


async def test_duplicate_label_sets_are_reported_not_merged(
    database: ScratchDatabase, make_exporter
) -> None:
    """Rows repeating a label set keep the first value and are counted as duplicates."""
    database.execute(
        "INSERT INTO work_items VALUES (1,'q','new',1),(1,'q','new',5),(1,'r','new',3)"
    )
    exporter = await make_exporter(two_tenants(database.dsn, DUPES))
    await exporter.run("acme", "dupes")
    samples = await exporter.samples()
    assert samples[key("cockpit_weight", tenant="acme", queue="q")] == 1
    assert samples[key("cockpit_weight", tenant="acme", queue="r")] == 3
    labels = {"tenant": "acme", "source": "sql", "query": "dupes"}
    assert samples[key("cockpit_collection_duplicate_series_total", **labels)] == 1
    assert samples[key("cockpit_collection_success", **labels)] == 1


async def test_series_limit_drops_and_counts(database: ScratchDatabase, make_exporter) -> None:
    """Past max_series the excess is dropped and counted, and the run still succeeds."""
    database.execute(
        "INSERT INTO work_items VALUES " + ",".join(f"(1,'q{i}','new',{i})" for i in range(10))
    )
    queries = DUPES.replace("ORDER BY weight", "ORDER BY weight\n    max_series: 4")
    full = "limits: {self_metrics: full}\n"
    exporter = await make_exporter(two_tenants(database.dsn, queries, extra=full))
    await exporter.run("acme", "dupes")
    samples = await exporter.samples()
    assert len([k for k in samples if k[0] == "cockpit_weight"]) == 4
    labels = {"tenant": "acme", "source": "sql", "query": "dupes"}
    assert samples[key("cockpit_collection_series_dropped_total", **labels)] == 6
    assert samples[key("cockpit_collection_series", **labels)] == 4


async def test_non_numeric_value_fails_the_query_not_the_process(
    database: ScratchDatabase, make_exporter
) -> None:
    """A text value fails that query with reason=value; other queries are unaffected."""
    database.execute("INSERT INTO work_items VALUES (1,'q','new',1)")
    bad = """
  - name: bad
    sql: SELECT queue, status FROM work_items
    metrics: [{{name: cockpit_bad, type: gauge, help: B., labels: [queue], value: status}}]
  - name: missing
    sql: SELECT queue FROM work_items
    metrics: [{{name: cockpit_missing, type: gauge, help: M., value: nope}}]
"""
    exporter = await make_exporter(two_tenants(database.dsn, WORK_ITEMS + bad))
    await exporter.run_all()
    samples = await exporter.samples()
    for query in ("bad", "missing"):
        labels = {"tenant": "acme", "source": "sql", "query": query}
        assert samples[key("cockpit_collection_success", **labels)] == 0
        assert samples[key("cockpit_collection_errors_total", reason="value", **labels)] == 1
    assert (
        "non-numeric value 'new' in column status"
        in exporter.stats("acme", "sql", "bad").last_error
    )
    assert "column(s) nope not in result" in exporter.stats("acme", "sql", "missing").last_error
    ok = {"tenant": "acme", "source": "sql", "query": "work_items"}
    assert samples[key("cockpit_collection_success", **ok)] == 1


async def test_sql_error_has_reason_query(database: ScratchDatabase, make_exporter) -> None:
    """A statement the server rejects fails with reason=query and the server's message."""
    broken = """
  - name: broken
    sql: SELECT v FROM no_such_table
    metrics: [{{name: cockpit_x, type: gauge, help: X., value: v}}]
"""
    exporter = await make_exporter(two_tenants(database.dsn, broken))
    await exporter.run("acme", "broken")
    stats = exporter.stats("acme", "sql", "broken")
    assert stats.errors["query"] == 1
    assert "no_such_table" in stats.last_error


async def test_connection_dropped_by_the_server_is_replaced(
    database: ScratchDatabase, make_exporter
) -> None:
    """A kept connection killed server-side (restart, idle timeout) costs no failed run."""
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1)")
    exporter = await make_exporter(two_tenants(database.dsn))
    await exporter.run("acme", "work_items")
    ids = admin(
        f"SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{database.name}' "
        "AND ID <> CONNECTION_ID()"
    )
    assert ids, "the exporter should keep its connection between runs"
    for (thread,) in ids:
        admin(f"KILL {thread}")
    await exporter.run("acme", "work_items")
    stats = exporter.stats("acme", "sql", "work_items")
    assert stats.runs == 2 and stats.success, stats.last_error
    assert sum(stats.errors.values()) == 0
