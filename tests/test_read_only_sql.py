"""SQL sessions are read-only and run one statement at a time: a query that writes, or hides a
second statement after `;`, fails its run and the table keeps its rows. Real MariaDB (the
shared-connection pipeline and tenant discovery) and real SQLite files."""

import sqlite3
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from tests.conftest import ScratchDatabase, admin, key

VALUE = "{name: probe_n, type: gauge, help: N., value: n}"


def queries(*sql: str) -> str:
    return "queries:\n" + "".join(
        f'  - {{name: q{i}, sql: "{s}", metrics: [{VALUE}]}}\n' for i, s in enumerate(sql)
    )


def failed(exporter, query: str, tenant: str = "acme") -> str:
    stats = exporter.stats(tenant, "sql", query)
    assert not stats.success
    assert stats.errors["query"] >= 1
    return stats.last_error


@pytest.fixture
def victim(make_database) -> ScratchDatabase:
    db = make_database()
    db.execute("CREATE TABLE victim (n INT)", "INSERT INTO victim VALUES (1), (2)")
    return db


def rows(db: ScratchDatabase) -> list[tuple]:
    return admin(f"SELECT n FROM {db.name}.victim ORDER BY n")


async def test_mysql_writes_and_stacked_statements_fail(victim: ScratchDatabase, make_exporter):
    """On the shared connections: `SELECT 1 AS n; DROP TABLE victim` is a syntax error (no
    multi-statements), UPDATE and DELETE are refused by the read-only session; every run
    fails with the server's message, the table keeps its rows, and a reading query on the
    same connection still works."""
    text = f"tenants:\n  - {{id: acme, mysql: {{dsn: '{victim.dsn}'}}}}\n" + queries(
        "SELECT 1 AS n; DROP TABLE victim",
        "UPDATE victim SET n = n + 1",
        "DELETE FROM victim",
        "SELECT COUNT(*) AS n FROM victim",
    )
    exporter = await make_exporter(text)
    for _ in range(2):
        await exporter.run_all()
    assert "You have an error in your SQL syntax" in failed(exporter, "q0")
    for query in ("q1", "q2"):
        message = failed(exporter, query)
        assert "READ ONLY transaction" in message
        assert "queries run in read-only sessions and may not write" in message
    samples = await exporter.samples()
    assert samples[key("probe_n", tenant="acme")] == 2
    assert rows(victim) == [(1,), (2,)]


async def test_discovery_registry_query_cannot_write(victim: ScratchDatabase, make_exporter):
    """The registry query runs read-only too: a registry statement that writes fails the
    discovery round and changes nothing."""
    text = f"""
tenant_discovery:
  dsn: '{victim.dsn}'
  sql: "UPDATE victim SET n = 0"
  mysql: {{dsn: '{victim.dsn}'}}
tenants:
  - {{id: acme, mysql: {{dsn: '{victim.dsn}'}}}}
{queries("SELECT COUNT(*) AS n FROM victim")}"""
    exporter = await make_exporter(text)
    samples = await exporter.samples()
    assert samples[key("cockpit_exporter_discovery_success")] == 0
    assert "READ ONLY" in exporter.exporter.discovery.status()
    assert rows(victim) == [(1,), (2,)]


async def test_sqlite_connections_are_query_only(tmp_path: Path, make_exporter) -> None:
    """SQLite: a write fails (query_only), a second statement fails (one at a time); the rows
    stay, and the file's reading query keeps working."""
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE victim (n INT); INSERT INTO victim VALUES (1), (2);")
    text = f"tenants:\n  - {{id: acme, mysql: {{dsn: 'sqlite:///{path}'}}}}\n" + queries(
        "UPDATE victim SET n = n + 1",
        "SELECT 1 AS n; DELETE FROM victim",
        "SELECT COUNT(*) AS n FROM victim",
    )
    exporter = await make_exporter(text)
    await exporter.run_all()
    assert "readonly database" in failed(exporter, "q0")
    assert "one statement at a time" in failed(exporter, "q1")
    assert (await exporter.samples())[key("probe_n", tenant="acme")] == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT n FROM victim ORDER BY n").fetchall() == [(1,), (2,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SET SESSION TRANSACTION READ WRITE",
        "/*!40101 SET SESSION TRANSACTION READ WRITE */",
        "  -- switch\\n use other_db",
        "PRAGMA query_only = 0",
        "START TRANSACTION",
    ],
)
def test_statements_that_change_the_shared_session_are_refused(sql: str) -> None:
    """A statement that would change the session later runs share (access mode, database,
    transaction) is a config error naming the query, before anything runs."""
    text = "tenants:\n  - {id: acme, mysql: {dsn: 'mysql://u@db/x'}}\n" + queries(sql)
    with pytest.raises(ConfigError) as error:
        parse_config(text, "test")
    (problem,) = error.value.problems
    assert problem.startswith("queries[0].sql:")
    assert "would change the session that later runs share" in problem
