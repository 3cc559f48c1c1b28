"""Tenant discovery from a registry database (real MariaDB): rows become tenants."""

import subprocess
import sys

import pytest

from exporter.config import ConfigError, parse_config
from tests.conftest import ScratchDatabase, key

QUERY = """queries:
  - name: v
    sql: SELECT SUM(v) AS v FROM t WHERE owner = :tenant_id
    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]
"""


def discovery_config(registry: ScratchDatabase, static: str = "", extra: str = "") -> str:
    return (
        "tenant_discovery:\n"
        f"  dsn: mysql://root@127.0.0.1:3306/{registry.name}\n"
        "  sql: SELECT slug AS id, db_name AS `database`, id AS tenant_id FROM tenants"
        " WHERE active = 1 ORDER BY id\n"
        "  interval: 60s\n"
        "  mysql: {dsn: 'mysql://root@127.0.0.1:3306/{database}'}\n"
        f"{extra}"
        f"tenants: [{static}]\n{QUERY}"
    )


@pytest.fixture
def registry(make_database) -> ScratchDatabase:
    db = make_database()
    db.execute(
        "CREATE TABLE tenants (id INT PRIMARY KEY, slug VARCHAR(80), db_name VARCHAR(80),"
        " active TINYINT DEFAULT 1)"
    )
    return db


def tenant_database(make_database, owner: int, value: int) -> ScratchDatabase:
    db = make_database()
    db.execute("CREATE TABLE t (owner INT, v INT)", f"INSERT INTO t VALUES ({owner}, {value})")
    return db


def values(samples) -> dict[str, float]:
    return {
        dict(labels)["tenant"]: v for (name, labels), v in samples.items() if name == "cockpit_v"
    }


def discovery(samples) -> tuple[float, float, float, float]:
    return tuple(  # type: ignore[return-value]
        samples[key(f"cockpit_exporter_discovery_{name}")]
        for name in ("success", "tenants", "failures_total", "rows_skipped_total")
    )


async def test_registry_rows_become_tenants_and_follow_the_registry(
    registry: ScratchDatabase, make_database, make_exporter
) -> None:
    """Rows start tenants with their params; added rows start, removed rows' series vanish,
    a changed database restarts the tenant: exactly like a reload."""
    a, b, c = (tenant_database(make_database, owner, owner * 10) for owner in (1, 2, 3))
    registry.execute(
        f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1), (2, 'globex', '{b.name}', 1),"
        f" (3, 'initech', '{c.name}', 0)"
    )
    exporter = await make_exporter(discovery_config(registry))
    await exporter.run_all()
    samples = await exporter.samples()
    assert values(samples) == {"acme": 10, "globex": 20}
    assert discovery(samples) == (1, 2, 0, 0)

    registry.execute(
        "UPDATE tenants SET active = 1 WHERE id = 3", "DELETE FROM tenants WHERE id = 1"
    )
    await exporter.exporter.discovery.poll()
    await exporter.run_all()
    assert values(await exporter.samples()) == {"globex": 20, "initech": 30}

    # globex moves to another database: its job restarts on the new one.
    moved = tenant_database(make_database, 2, 99)
    registry.execute(f"UPDATE tenants SET db_name = '{moved.name}' WHERE id = 2")
    await exporter.exporter.discovery.poll()
    await exporter.run_all()
    assert values(await exporter.samples()) == {"globex": 99, "initech": 30}
    page = await exporter.scrape("/")
    assert "Tenant discovery" in page and "ok: 2 tenants" in page


async def test_a_static_tenant_wins_over_a_discovered_one(
    registry: ScratchDatabase, make_database, make_exporter, capsys
) -> None:
    a, own = tenant_database(make_database, 1, 10), tenant_database(make_database, 1, 77)
    registry.execute(f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1)")
    static = f"{{id: acme, mysql: {{dsn: '{own.dsn}'}}, params: {{tenant_id: 1}}}}"
    exporter = await make_exporter(discovery_config(registry, static))
    await exporter.exporter.discovery.poll()
    await exporter.run_all()
    assert values(await exporter.samples()) == {"acme": 77}
    logged = capsys.readouterr().out
    assert logged.count("discovered tenant shadowed by a static one") == 1
    assert "tenant=acme" in logged


async def test_invalid_rows_are_skipped_counted_and_named(
    registry: ScratchDatabase, make_database, make_exporter, capsys
) -> None:
    good = tenant_database(make_database, 1, 10)
    registry.execute(
        f"INSERT INTO tenants VALUES (1, 'acme', '{good.name}', 1),"
        f" (2, 'Bad Id!', '{good.name}', 1),"  # not a valid tenant id
        " (3, 'nodb', NULL, 1),"  # no database
        f" (4, 'acme', '{good.name}', 1),"  # duplicate id
        " (5, 'sneaky', 'x@evil:1/y', 1)"  # would rewrite the DSN
    )
    exporter = await make_exporter(discovery_config(registry))
    await exporter.run_all()
    samples = await exporter.samples()
    assert values(samples) == {"acme": 10}
    assert discovery(samples) == (1, 1, 0, 4)
    logged = capsys.readouterr().out
    for row, why in ((2, "Bad Id!"), (3, "None"), (4, "duplicate id, first at row 1"),
                     (5, "not a plain database name")):  # fmt: skip
        assert f"row {row} (id" in logged and why in logged, (row, why)
    await exporter.exporter.discovery.poll()
    samples = await exporter.samples()
    assert discovery(samples) == (1, 1, 0, 8)  # counted every round
    assert capsys.readouterr().out.count("registry row skipped") == 0  # named once


async def test_an_unchanged_registry_is_not_validated_again(
    registry: ScratchDatabase, make_database, make_exporter
) -> None:
    """Rows equal to the last round's reuse its tenants (validation is the round's cost);
    one changed value makes the round validate again and apply the change."""
    a, b = tenant_database(make_database, 1, 10), tenant_database(make_database, 1, 20)
    registry.execute(f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1)")
    exporter = await make_exporter(discovery_config(registry))
    found = exporter.exporter.discovery
    validated: list[str] = []
    check = found.validate
    found.validate = lambda entry: (validated.append(entry["id"]), check(entry))
    await found.poll()
    assert validated == []
    registry.execute(f"UPDATE tenants SET db_name = '{b.name}' WHERE id = 1")
    await found.poll()
    assert validated == ["acme"]
    await exporter.run_all()
    assert values(await exporter.samples()) == {"acme": 20}


async def test_a_failing_registry_keeps_the_last_known_tenants(
    registry: ScratchDatabase, make_database, make_exporter
) -> None:
    """Registry gone, too many rows, wrong columns: each fails the round, names why, and the
    tenants known before stay collected."""
    a = tenant_database(make_database, 1, 10)
    registry.execute(f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1)")
    exporter = await make_exporter(discovery_config(registry))
    discovery_ = exporter.exporter.discovery

    registry.execute("RENAME TABLE tenants TO tenants_old")
    await discovery_.poll()
    assert "cannot query the registry" in discovery_.last_error
    assert "doesn't exist" in discovery_.last_error

    registry.execute(
        "CREATE TABLE tenants (id INT PRIMARY KEY, slug VARCHAR(80), db_name VARCHAR(80),"
        " active TINYINT DEFAULT 1)",
        "INSERT INTO tenants SELECT seq, CONCAT('t', seq), 'x', 1 FROM seq_1_to_100000",
    )
    await discovery_.poll()
    assert "returned more rows than max_tenants (10000)" in discovery_.last_error

    registry.execute("DROP TABLE tenants", "RENAME TABLE tenants_old TO tenants")
    object.__setattr__(discovery_.spec, "sql", "SELECT slug AS id FROM tenants")
    await discovery_.poll()
    assert "must return columns id, database (missing database" in discovery_.last_error

    await exporter.run_all()
    samples = await exporter.samples()
    assert values(samples) == {"acme": 10}  # still collected
    assert discovery(samples) == (0, 1, 3, 0)
    assert "failing (3 failures; keeping 1 known tenants)" in await exporter.scrape("/")


async def test_a_registry_that_hangs_times_out(
    registry: ScratchDatabase, make_database, make_exporter
) -> None:
    a = tenant_database(make_database, 1, 10)
    registry.execute(f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1)")
    exporter = await make_exporter(discovery_config(registry))
    discovery_ = exporter.exporter.discovery
    object.__setattr__(discovery_.spec, "timeout", 0.5)
    object.__setattr__(discovery_.spec, "sql", "SELECT SLEEP(5) AS id, 'x' AS `database`")
    await discovery_.poll()
    assert discovery_.last_error == "tenant_discovery: the registry did not answer within 0.5s"
    assert [t["id"] for t in discovery_.tenants] == ["acme"]


def test_discovery_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("tenant_discovery: {dsn: 'mysql://r@h/reg', sql: 'SELECT 1'}\n", "c.yaml")
    assert "tenant_discovery.mysql: Field required" in error.value.problems
    with pytest.raises(ConfigError) as error:
        parse_config(
            "tenant_discovery: {dsn: 'mysql://r@h/reg', sql: 'SELECT 1', max_tenants: 0,"
            " mysql: {dsn: 'mysql://r@h/{database}'}}\n",
            "c.yaml",
        )
    assert any(p.startswith("tenant_discovery.max_tenants:") for p in error.value.problems)


async def test_a_reload_keeps_discovered_tenants_until_discovery_is_removed(
    registry: ScratchDatabase, make_database, make_exporter, tmp_path
) -> None:
    a = tenant_database(make_database, 1, 10)
    registry.execute(f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1)")
    text = discovery_config(registry)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    exporter = await make_exporter(text, config=path)
    assert await exporter.exporter.reload() == []
    await exporter.run_all()
    assert values(await exporter.samples()) == {"acme": 10}
    b = tenant_database(make_database, 7, 70)
    static = f"{{id: own, mysql: {{dsn: '{b.dsn}'}}, params: {{tenant_id: 7}}}}"
    path.write_text(f"tenants: [{static}]\n{QUERY}")  # tenant_discovery removed
    assert await exporter.exporter.reload() == []
    await exporter.run_all()
    samples = await exporter.samples()
    assert values(samples) == {"own": 70}
    assert exporter.exporter.discovery is None
    assert not [k for k in samples if k[0].startswith("cockpit_exporter_discovery_")]


def test_check_config_connect_runs_discovered_tenants(
    registry: ScratchDatabase, make_database, tmp_path
) -> None:
    """`check-config --connect` reads the registry once and runs its tenants' jobs."""
    a, b = tenant_database(make_database, 1, 10), tenant_database(make_database, 2, 20)
    registry.execute(
        f"INSERT INTO tenants VALUES (1, 'acme', '{a.name}', 1), (2, 'globex', '{b.name}', 1)"
    )
    path = tmp_path / "c.yaml"
    path.write_text(discovery_config(registry))
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path), "--connect"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant discovery: ok: 2 tenants" in done.stderr
    assert "acme" in done.stdout and "globex" in done.stdout
    registry.execute("RENAME TABLE tenants TO gone")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path), "--connect"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot query the registry" in done.stderr
