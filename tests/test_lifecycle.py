"""The running process: reload on SIGHUP and POST /-/reload, graceful and hurried shutdown."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ScratchDatabase, admin, free_port, parse_samples
from tests.helpers import until, wait_ready


def sqlite_tenant(directory: Path, tenant: str, value: int) -> str:
    path = directory / f"{tenant}.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        db.execute("DELETE FROM t")
        db.execute("INSERT INTO t VALUES (?)", (value,))
    return f"  - {{id: {tenant}, mysql: {{dsn: 'sqlite:///{path}'}}}}\n"


QUERY = """queries:
  - name: q
    sql: SELECT v FROM t
    interval: 1s
    timeout: 1s
    stale_after: 10s  # gauges stay while a loaded machine runs late
    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]
"""


def start(config: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(config), "--web.listen-address",
         f"127.0.0.1:{port}", "--log.format", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_samples(response.read().decode())


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def eventually(check, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    return until(check, seconds, step=0.2)


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_on_errors(tmp_path: Path) -> None:
    """A broken config on SIGHUP changes nothing but the reload metric; a valid one adds
    and removes tenants, their series appearing and disappearing, unchanged ones kept."""
    config = tmp_path / "config.yaml"
    a, b, c = (sqlite_tenant(tmp_path, t, v) for t, v in (("a", 1), ("b", 2), ("c", 3)))
    config.write_text("tenants:\n" + a + b + QUERY)
    port = free_port()
    process = start(config, port)
    try:
        wait_ready(port, process)
        assert eventually(lambda: value(scrape(port), "cockpit_v", tenant="b") == 2)
        hash_before = value(scrape(port), "cockpit_exporter_config_hash")
        config.write_text("tenants: [\n")
        process.send_signal(signal.SIGHUP)
        assert eventually(
            lambda: value(scrape(port), "cockpit_exporter_config_last_reload_successful") == 0
        )
        samples = scrape(port)
        assert value(samples, "cockpit_v", tenant="a") == 1
        assert value(samples, "cockpit_v", tenant="b") == 2
        config.write_text("tenants:\n" + a + c + QUERY)
        process.send_signal(signal.SIGHUP)
        assert eventually(lambda: value(scrape(port), "cockpit_v", tenant="c") == 3)
        samples = scrape(port)
        assert value(samples, "cockpit_exporter_config_last_reload_successful") == 1
        assert value(samples, "cockpit_exporter_config_hash") != hash_before
        assert value(samples, "cockpit_v", tenant="a") == 1
        assert not any(("tenant", "b") in labels for _, labels in samples)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert '"event": "reload failed"' in output and "invalid YAML" in output, output
    assert '"event": "config reloaded"' in output


def test_reload_endpoint_only_when_enabled(tmp_path: Path) -> None:
    """POST /-/reload is 404 unless --web.enable-reload; enabled, it reports problems as 400."""
    config = tmp_path / "config.yaml"
    config.write_text("tenants:\n" + sqlite_tenant(tmp_path, "a", 1) + QUERY)
    for enabled in (False, True):
        port = free_port()
        process = start(config, port, *(["--web.enable-reload"] if enabled else []))
        try:
            wait_ready(port, process)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    status, body = response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode()
            assert status == (200 if enabled else 404), body
            if enabled:
                config.write_text("tenants: 3\n")
                try:
                    urllib.request.urlopen(request, timeout=5)
                except urllib.error.HTTPError as exc:
                    assert exc.code == 400 and "tenants" in exc.read().decode()
                else:
                    raise AssertionError("a broken config must be refused")
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
        config.write_text("tenants:\n" + sqlite_tenant(tmp_path, "a", 1) + QUERY)


def slow_config(tmp_path: Path, database: ScratchDatabase) -> Path:
    config = tmp_path / "slow.yaml"
    config.write_text(
        f"tenants:\n  - {{id: a, mysql: {{dsn: '{database.dsn}'}}}}\n"
        "queries:\n  - name: slow\n    sql: SELECT SLEEP(30) AS v\n    interval: 6s\n"
        "    timeout: 6s\n    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]\n"
    )
    return config


def wait_for_query(database: ScratchDatabase) -> None:
    sql = (
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        f"WHERE DB = '{database.name}' AND INFO LIKE 'SELECT SLEEP%'"
    )
    assert eventually(lambda: admin(sql)[0][0] == 1, seconds=30), "the slow query never started"


def test_sigterm_during_a_slow_query_exits_within_the_grace_period(
    tmp_path: Path, database: ScratchDatabase
) -> None:
    """SIGTERM: not ready at once, the running query gets the grace period, then the process
    cancels it, closes its pools and exits 0."""
    port = free_port()
    process = start(slow_config(tmp_path, database), port, "--shutdown.grace-period", "1s")
    try:
        wait_for_query(database)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert 0.9 < elapsed < 4, elapsed
    events = [line for line in output.splitlines() if '"event"' in line]
    order = [e for e in ("shutting down", "runs cancelled at shutdown", "exporter stopped")
             if any(f'"event": "{e}"' in line for line in events)]  # fmt: skip
    assert order == ["shutting down", "runs cancelled at shutdown", "exporter stopped"], output


def test_second_signal_exits_at_once(tmp_path: Path, database: ScratchDatabase) -> None:
    """With a long grace period, a second SIGTERM ends the process immediately."""
    port = free_port()
    process = start(slow_config(tmp_path, database), port, "--shutdown.grace-period", "60s")
    try:
        wait_for_query(database)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "the first signal waits for the running query"
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        process.communicate(timeout=10)
        assert time.monotonic() - started < 2
        assert process.returncode == 1
    finally:
        if process.poll() is None:
            process.kill()


async def test_reload_picks_up_a_rotated_database_password(
    make_database, make_exporter, tmp_path: Path
) -> None:
    """Rotate a password: the old one stops working, the file gets the new one, a reload
    replaces the pool, and collection works again without a restart."""
    import uuid

    from exporter.config import load_config

    db = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (5)")
    user, old, new = f"ck_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, uuid.uuid4().hex
    admin(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{old}'",
        f"GRANT SELECT ON {db.name}.* TO '{user}'@'%'",
    )
    secret, config = tmp_path / "password", tmp_path / "config.yaml"
    secret.write_text(old)
    config.write_text(
        f"tenants:\n  - {{id: a, mysql: {{dsn: 'mysql://{user}@127.0.0.1:3306/{db.name}', "
        f"password_file: {secret}}}}}\n" + QUERY
    )
    try:
        exporter = await make_exporter(config.read_text(), config=config)
        await exporter.run("a", "q")
        stats = exporter.stats("a", "sql", "q")
        assert stats.success, stats.last_error
        admin(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{new}'")
        for (thread,) in admin(
            f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
        ):
            admin(f"KILL {thread}")
        await exporter.run("a", "q")
        assert not stats.success and "Access denied" in stats.last_error
        secret.write_text(new)
        assert await exporter.exporter.reload() == []
        await exporter.run("a", "q")
        assert exporter.stats("a", "sql", "q").success
        assert exporter.exporter.config.digest == load_config(config).digest
        assert len(exporter.exporter.sources["sql"].built.engines.servers) == 1  # old pool closed
    finally:
        admin(f"DROP USER '{user}'@'%'")


async def test_job_removed_while_running_does_not_come_back(
    database: ScratchDatabase, make_exporter, tmp_path: Path
) -> None:
    """A reload that removes a tenant whose query is running: when the run ends, nothing of
    that tenant is published again."""
    import asyncio

    from exporter.config import parse_config

    text = (
        f"tenants:\n  - {{id: a, mysql: {{dsn: '{database.dsn}'}}}}\n"
        f"  - {{id: b, mysql: {{dsn: '{database.dsn}'}}}}\n"
        "queries:\n  - name: q\n    sql: SELECT SLEEP(1) + 7 AS v\n    interval: 5s\n"
        "    timeout: 3s\n    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]\n"
    )
    exporter = await make_exporter(text)
    running = asyncio.create_task(exporter.run("b", "q"))
    await asyncio.sleep(0.3)
    await exporter.exporter.apply(parse_config(text.replace("  - {id: b", "  - {id: x"), "x"))
    await running
    samples = await exporter.samples()
    assert not any(("tenant", "b") in labels for _, labels in samples)
    assert not [s for s in exporter.exporter.runner.stats if s.tenant == "b"]
