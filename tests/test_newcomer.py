"""What a newcomer meets first: a taken port, the landing page, a dry run, the CLI's help."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ScratchDatabase, free_port
from tests.helpers import sha, two_tenants


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        check=False, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["run", "demo", "simulate"])
def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    """Before any job starts: one line naming the address and the flag, no traceback."""
    config = tmp_path / "c.yaml"
    config.write_text("tenants:\n  - {id: a, mysql: {dsn: 'sqlite:///x.db'}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        extra = ["--config", str(config)] if command == "run" else []
        result = cli(command, *extra, "--web.listen-address", address)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "cockpit-exporter:" in line]
    assert errors == [
        f"cockpit-exporter: cannot listen on {address}: address already in use;"
        " choose another with --web.listen-address"
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Unclosed" not in result.stderr + result.stdout


async def test_telemetry_path(database: ScratchDatabase, make_exporter) -> None:
    """--web.telemetry-path moves the metrics; the old path is a 404."""
    running = await make_exporter(two_tenants(database.dsn), telemetry_path="/custom")
    await running.run_all()
    assert "cockpit_collection_success" in await running.scrape("/custom")
    assert (await running.get("/metrics")).status == 404
    assert 'href="/custom?tenant=acme"' in await running.scrape("/")


async def test_landing_page_failing_first_config_masked(
    make_database, make_exporter, tmp_path: Path
) -> None:
    """Failing jobs come first; each tenant links to its metrics; the config table shows the
    DSN with its password masked; a scoped token sees only its tenant's jobs."""
    from exporter.webconfig import load_web_config

    db: ScratchDatabase = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (1)")
    password = "landing-page-secret-7c1"
    dsn = f"mysql://root:{password}@127.0.0.1:3306/{db.name}"
    text = f"""
tenants:
  - {{id: acme, mysql: {{dsn: '{db.dsn}'}}}}
  - {{id: zeta, mysql: {{dsn: '{dsn}'}}}}
queries:
  - {{name: good, sql: SELECT v FROM t,
     metrics: [{{name: x_good, type: gauge, help: G., value: v}}]}}
  - {{name: broken, sql: SELECT v FROM missing, tenants: [zeta],
     metrics: [{{name: x_broken, type: gauge, help: B., value: v}}]}}
"""
    web = tmp_path / "web.yaml"
    web.write_text(
        f"bearer_tokens:\n  - {{name: ops, sha256: {sha('ops-tok')}}}\n"
        f"  - {{name: acme, sha256: {sha('acme-tok')}, tenants: [acme]}}\n"
    )
    running = await make_exporter(text, web_config=load_web_config(web))
    for job in running.exporter.runner.jobs():
        await running.exporter.run_job(job)
    page = await running.scrape("/", headers={"Authorization": "Bearer ops-tok"})
    assert page.index(">failing<") < page.index(">ok<")
    assert "2 failing" in page  # both of zeta's jobs: its password is wrong
    assert 'href="/metrics?tenant=zeta"' in page and "zeta/sql/broken" in page
    assert password not in page and "***" in page
    scoped = await running.scrape("/", headers={"Authorization": "Bearer acme-tok"})
    assert "acme/sql/good" in scoped and "zeta" not in scoped


def test_check_config_connect_runs_every_job(make_database, tmp_path: Path) -> None:
    """A dry run: a table per tenant of what would be exported or why not; exit 1 when any
    job fails, 0 when all succeed; secrets stay out of the output."""
    db: ScratchDatabase = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (4), (5)")
    good = f"""
tenants:
  - {{id: acme, mysql: {{dsn: '{db.dsn}'}}}}
queries:
  - {{name: q, sql: SELECT v FROM t,
     metrics: [{{name: x_v, type: gauge, help: V., labels: [], value: v}}]}}
"""
    path = tmp_path / "good.yaml"
    path.write_text(good.replace("labels: [], ", ""))
    ok = cli("check-config", str(path), "--connect")
    assert ok.returncode == 0, ok.stderr
    rows = [line.split() for line in ok.stdout.splitlines()[1:]]
    assert rows[0][:5] == ["tenant", "source", "query", "result", "series"]
    assert rows[1][:4] == ["acme", "sql", "q", "ok"]
    assert "[1/1] acme: 1 job(s), ok" in ok.stderr
    bad = good.replace("FROM t", "FROM nope").replace("labels: [], ", "")
    path.write_text(bad)
    failed = cli("check-config", str(path), "--connect")
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout and "nope" in failed.stdout
    assert "some jobs failed" in failed.stderr


def test_render_help_per_target_and_no_silent_flags() -> None:
    """Each render target has its own help; a flag a target does not take is refused."""
    rules = cli("render", "rules", "--help")
    assert rules.returncode == 0 and "--runbooks" in rules.stdout and "--out" not in rules.stdout
    dashboards = cli("render", "dashboards", "--help")
    assert "--out" in dashboards.stdout and "--runbooks" not in dashboards.stdout
    refused = cli("render", "rules", "--out", "x")
    assert refused.returncode == 2 and "unrecognized arguments: --out" in refused.stderr


def test_simulate_honours_its_listen_address(tmp_path: Path) -> None:
    """`simulate --web.listen-address` is where it listens (and what the written config uses)."""
    port = free_port()
    config = tmp_path / "sim.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "simulate", "--tenants", "1",
         "--web.listen-address", f"127.0.0.1:{port}", "--write-config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for _ in range(100):
            if config.exists() and config.read_text():
                break
            time.sleep(0.1)
        assert f"http://127.0.0.1:{port}/t/" in config.read_text()
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_simulate_refuses_a_bad_warm_up() -> None:
    """`--warm-up` takes a duration; anything else is a usage error naming the flag."""
    for bad in ("soon", "-5m"):
        result = cli("simulate", f"--warm-up={bad}")
        assert result.returncode == 2, result.stderr
        assert "argument --warm-up: invalid duration value" in result.stderr
        assert "Traceback" not in result.stderr


async def test_a_wrong_base_url_is_named_in_the_error(make_exporter, tmp_path: Path) -> None:
    """`processes: HTTP 404 from <url>`: the URL shows which part of the config is wrong."""
    from tests import platform_helpers

    sim = await platform_helpers.start(1)
    try:
        exporter = await make_exporter(sim.config(tmp_path).replace("/t/t0001", "/t/nobody"))
        await exporter.exporter.run_job(exporter.job("t0001", "poll", "platform"))
        error = exporter.stats("t0001", "platform", "processes").last_error
    finally:
        await sim.runner.cleanup()
    assert error == f"processes: HTTP 404 from {sim.url}/t/nobody/api/v1/processes", error
