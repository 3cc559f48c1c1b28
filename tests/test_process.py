"""The real command: demo, run with secrets from files, SIGTERM, and what reaches logs."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import ScratchDatabase, admin, free_port, parse_samples


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_ready(port: int, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting, or a read timeout: try again
            pass
        time.sleep(0.2)
    raise AssertionError("exporter did not become ready")


def fetch(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return process.returncode, output


def test_demo_serves_three_tenants() -> None:
    """`cockpit-exporter demo` needs no MySQL and serves three tenants' SQL and platform
    metrics."""
    port = free_port()
    process = start("demo", "--web.listen-address", f"127.0.0.1:{port}")
    try:
        wait_ready(port, process)
        samples = parse_samples(fetch(port))
    finally:
        code, output = stop(process)
    for metric in ("cockpit_work_items", "cockpit_agent_up", "cockpit_runs_finished_total"):
        tenants = {dict(labels).get("tenant") for name, labels in samples if name == metric}
        assert tenants == {"acme", "globex", "initech"}, metric
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/" in output


def test_secrets_never_reach_logs_or_metrics(make_database, tmp_path: Path) -> None:
    """A real run (config from COCKPIT_CONFIG) with file and env passwords, one of them
    wrong, never shows either secret in logs, /metrics or the landing page."""
    db: ScratchDatabase = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (3)")
    user = f"ck_{uuid.uuid4().hex[:8]}"
    good, wrong = f"good-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    admin(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{good}'",
        f"GRANT SELECT ON {db.name}.* TO '{user}'@'%'",
    )
    try:
        secret = tmp_path / "db-password"
        secret.write_text(good + "\n")
        config = tmp_path / "config.yaml"
        dsn = f"mysql://{user}@127.0.0.1:3306/{db.name}"
        config.write_text(
            f"""
tenants:
  - {{id: good, mysql: {{dsn: '{dsn}', password_file: {secret}}}}}
  - {{id: bad, mysql: {{dsn: '{dsn}', password_env: BAD_DB_PASSWORD}}}}
queries:
  - name: t
    sql: SELECT v FROM t
    interval: 1s
    timeout: 1s
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
"""
        )
        port = free_port()
        process = start(
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "debug",
            "--log.format",
            "json",
            env={"BAD_DB_PASSWORD": wrong, "COCKPIT_CONFIG": str(config)},
        )
        try:
            wait_ready(port, process)
            metrics, landing = fetch(port), fetch(port, "/")
        finally:
            code, output = stop(process)
    finally:
        admin(f"DROP USER '{user}'@'%'")
    samples = parse_samples(metrics)
    assert samples[("cockpit_v", frozenset({("tenant", "good")}))] == 3
    assert (
        samples[
            (
                "cockpit_collection_errors_total",
                frozenset(
                    {("tenant", "bad"), ("source", "sql"), ("query", "t"), ("reason", "connect")}
                ),
            )
        ]
        >= 1
    )
    assert "Access denied" in output
    for text in (metrics, landing, output):
        assert good not in text and wrong not in text
    assert code == 0, output
    assert '"event": "exporter stopped"' in output
