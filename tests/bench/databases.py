"""200 tenant databases in MariaDB, two queries each every 5 s: CPU per execution, RSS, latency.

Run: `make bench` (needs the local MariaDB at 127.0.0.1:3306, root, empty password).
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pymysql

from tests.conftest import free_port, parse_samples

TENANTS, WARMUP, MEASURE = 200, 15.0, 45.0
PREFIX = "cockpit_bench_"
ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "autocommit": True}

QUERIES = """
defaults: {interval: 5s, timeout: 4s, max_connections_per_server: 1}
queries:
  - name: work_items
    sql: SELECT queue, status, COUNT(*) AS items FROM work_items GROUP BY queue, status
    metrics:
      - {name: cockpit_work_items, type: gauge, help: Items., labels: [queue, status],
         value: items}
  - name: processed
    sql: SELECT queue, SUM(processed) AS processed FROM queue_stats GROUP BY queue
    metrics:
      - {name: cockpit_processed_total, type: counter, help: Processed., labels: [queue],
         value: processed}
"""


def create_databases(cursor: pymysql.cursors.Cursor) -> None:
    for t in range(TENANTS):
        db = f"{PREFIX}{t:03d}"
        cursor.execute(f"CREATE DATABASE {db}")
        cursor.execute(f"CREATE TABLE {db}.work_items (queue VARCHAR(20), status VARCHAR(20))")
        cursor.execute(f"CREATE TABLE {db}.queue_stats (queue VARCHAR(20), processed INT)")
        cursor.execute(
            f"INSERT INTO {db}.work_items VALUES "
            + ",".join(f"('q{i % 4}', 's{i % 5}')" for i in range(40))
        )
        cursor.execute(
            f"INSERT INTO {db}.queue_stats VALUES " + ",".join(f"('q{i}', {i})" for i in range(4))
        )


def drop_databases(cursor: pymysql.cursors.Cursor) -> None:
    cursor.execute(f"SHOW DATABASES LIKE '{PREFIX}%'")
    for (name,) in cursor.fetchall():
        cursor.execute(f"DROP DATABASE {name}")


def config_text() -> str:
    tenants = "\n".join(
        f"  - {{id: t{t:03d}, mysql: {{dsn: 'mysql://root@127.0.0.1:3306/{PREFIX}{t:03d}'}}}}"
        for t in range(TENANTS)
    )
    return f"tenants:\n{tenants}\n{QUERIES}"


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def executions(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        samples = parse_samples(response.read().decode())
    return sum(v for (name, _), v in samples.items() if name == "cockpit_collection_runs_total")


def scrape_latency(port: int, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            response.read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def start_exporter(config: Path, port: int) -> subprocess.Popen[bytes]:
    """The exporter as its own process, at the default log level (its log lines are part of
    the measured cost), JSON logs discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def measure(config: Path) -> None:
    port = free_port()
    process = start_exporter(config, port)
    try:
        time.sleep(WARMUP)
        (user0, sys0), runs0 = cpu_times(process.pid), executions(port)
        time.sleep(MEASURE)
        (user1, sys1), runs1 = cpu_times(process.pid), executions(port)
        latency = scrape_latency(port)
        rss = peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    runs = runs1 - runs0
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    expected = TENANTS * 2 * MEASURE / 5
    print(f"tenants: {TENANTS}, queries each: 2, interval: 5s, measured: {MEASURE:.0f}s")
    print(f"executions: {runs:.0f} (schedule implies {expected:.0f})")
    print(
        f"CPU per execution: {cpu / runs * 1000:.3f} ms "
        f"(user {user / runs * 1000:.3f}, system {system / runs * 1000:.3f}; target <= 0.5 ms)"
    )
    print(f"exporter CPU: {cpu / MEASURE * 100:.1f}% of one core")
    print(f"GET /metrics latency: {latency * 1000:.2f} ms (median of 20)")
    print(f"peak RSS: {rss:.0f} MB (target <= 150 MB)")


def main() -> None:
    root = pymysql.connect(**ROOT)
    with root.cursor() as cursor:
        cursor.execute("SELECT @@max_connections")
        (max_connections,) = cursor.fetchone()
        # One pooled connection per tenant database, plus headroom for the tests' own.
        cursor.execute(f"SET GLOBAL max_connections = {max(max_connections, TENANTS + 100)}")
        drop_databases(cursor)
        create_databases(cursor)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                config = Path(scratch) / "bench.yaml"
                config.write_text(config_text())
                measure(config)
        finally:
            drop_databases(cursor)
            cursor.execute(f"SET GLOBAL max_connections = {max_connections}")
    root.close()


if __name__ == "__main__":
    main()
