"""A fleet of tenant databases on the local MariaDB, two queries each every 30 s, against
sql_exporter 0.4.5 (Debian `prometheus-sql-exporter`) in the same run.

For 1,000 and 5,000 tenants (FLEET_SIZES overrides): CPU per query execution, peak RSS,
/metrics p50, series, open connections, and whether every job succeeded in every interval.
cockpit-exporter runs at the server's default max_connections (151) with tenants found by
tenant_discovery; sql_exporter needs one connection per database, so max_connections is
raised for its turn only and restored after. FLEET_CONFIGS picks our configs (`discovery`,
`static`: one DSN per tenant), FLEET_INTERVAL the interval, FLEET_MEASURE the seconds
measured (90), FLEET_CHURN=1 data that changes.

Run: `make bench` (needs the local MariaDB at 127.0.0.1:3306, root, empty password).
"""

import contextlib
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pymysql

from tests.bench import RUN_ID, TINY, sized
from tests.conftest import free_port, parse_samples

SIZES = [int(n) for n in os.environ.get("FLEET_SIZES", sized("1000,5000", "3")).split(",")]
INTERVAL, WARMUP, MEASURE = sized((30, 45.0, 90.0), (2, 2.0, 2.0))
INTERVAL = int(os.environ.get("FLEET_INTERVAL", INTERVAL))  # 5 for the 200-tenant workload
# FLEET_MEASURE=330 takes in the health records written every five minutes (from 300 s on).
MEASURE = float(os.environ.get("FLEET_MEASURE", MEASURE))
TIMEOUT = f"{min(10.0, INTERVAL * 0.75):g}s"  # a run's timeout must fit its interval
# Our config both ways: tenants from tenant_discovery, and one static DSN per tenant.
CONFIGS = os.environ.get("FLEET_CONFIGS", "discovery,static").split(",")
# FLEET_CHURN=1: every tenant's queue_stats change every second, so every run of the
# `processed` query gets a new reply (no run can reuse its last series), for both exporters.
CHURN = os.environ.get("FLEET_CHURN") == "1"
PREFIX = f"cockpit_fleet_{RUN_ID}"
REGISTRY = f"{PREFIX}registry"
USER, PASSWORD = f"cockpit_fleet{RUN_ID}", "fleet-bench"
# The registry has a user of its own, so the tenant user's connections are the cap alone.
REGISTRY_USER = f"cockpit_registry{RUN_ID}"
ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "autocommit": True}
WORK_ITEMS = "SELECT queue, status, COUNT(*) AS items FROM work_items GROUP BY queue, status"
PROCESSED = "SELECT queue, SUM(processed) AS processed FROM queue_stats GROUP BY queue"

OURS = f"""
defaults: {{interval: {INTERVAL}s, timeout: {TIMEOUT}}}
tenant_discovery:
  dsn: mysql://{REGISTRY_USER}@127.0.0.1:3306/{REGISTRY}
  password_env: FLEET_PASSWORD
  sql: SELECT slug AS id, db_name AS `database` FROM tenants
  mysql: {{dsn: 'mysql://{USER}@127.0.0.1:3306/{{database}}', password_env: FLEET_PASSWORD}}
queries:
  - name: work_items
    sql: {WORK_ITEMS}
    metrics:
      - {{name: cockpit_work_items, type: gauge, help: Items., labels: [queue, status],
         value: items}}
  - name: processed
    sql: {PROCESSED}
    metrics:
      - {{name: cockpit_processed_total, type: counter, help: Processed., labels: [queue],
         value: processed}}
"""


def peer_config(tenants: int) -> str:
    connections = "\n".join(
        f"  - 'mysql://{USER}:{PASSWORD}@tcp(127.0.0.1:3306)/{PREFIX}{t}'" for t in range(tenants)
    )
    return f"""jobs:
- name: fleet
  interval: '{INTERVAL}s'
  connections:
{connections}
  queries:
  - name: work_items
    help: Items.
    labels: [queue, status]
    values: [items]
    query: {WORK_ITEMS}
  - name: processed
    help: Processed.
    labels: [queue]
    values: [processed]
    query: {PROCESSED}
"""


def create_fleet(cursor: pymysql.cursors.Cursor, tenants: int) -> None:
    cursor.execute(f"CREATE DATABASE {REGISTRY}")
    cursor.execute(f"CREATE TABLE {REGISTRY}.tenants (slug VARCHAR(40), db_name VARCHAR(64))")
    for t in range(tenants):
        db = f"{PREFIX}{t}"
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
    cursor.executemany(
        f"INSERT INTO {REGISTRY}.tenants VALUES (%s, %s)",
        [(f"t{t:05d}", f"{PREFIX}{t}") for t in range(tenants)],
    )
    cursor.execute(f"CREATE USER {USER}@'%' IDENTIFIED BY '{PASSWORD}'")
    cursor.execute(f"GRANT SELECT ON *.* TO {USER}@'%'")
    cursor.execute(f"CREATE USER {REGISTRY_USER}@'%' IDENTIFIED BY '{PASSWORD}'")
    cursor.execute(f"GRANT SELECT ON {REGISTRY}.* TO {REGISTRY_USER}@'%'")


def drop_fleet(cursor: pymysql.cursors.Cursor) -> None:
    cursor.execute(f"DROP USER IF EXISTS {USER}@'%'")
    cursor.execute(f"DROP USER IF EXISTS {REGISTRY_USER}@'%'")
    cursor.execute(f"SHOW DATABASES LIKE '{PREFIX}%'")
    for (name,) in cursor.fetchall():
        cursor.execute(f"DROP DATABASE {name}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_up(port: int, seconds: float = 120) -> None:
    """Until the exporter on `port` answers /healthz (its start is not measured)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the exporter on port {port} never answered")


def scrape(port: int, timeout: float = 30) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return str(response.read().decode())


def scrape_p50(port: int, rounds: int = 20) -> float:
    """Median time until the last byte of /metrics is read.

    Bytes, not text: decoding 13 MB into a Python string costs this machine about 12 ms,
    which is the benchmark's own work, not the exporter's (Prometheus parses bytes).
    """
    started = time.perf_counter()
    scrape_bytes(port, timeout=120)
    if time.perf_counter() - started > 5:
        rounds = 3  # a scrape this slow is measured a few times only
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        scrape_bytes(port)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def scrape_bytes(port: int, timeout: float = 30) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return len(response.read())


class ConnectionWatch:
    """The peak number of the bench user's connections, sampled every 200 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Timeouts everywhere: a server busy accepting a peer's thousand connections may
        # leave a handshake unanswered, and the benchmark must not wait on it forever.
        settings = {**ROOT, "connect_timeout": 10, "read_timeout": 10, "write_timeout": 10}
        while not self._stop.is_set():
            try:
                self._sample(pymysql.connect(**settings))
            except pymysql.Error:
                self._stop.wait(1)

    def _sample(self, conn: pymysql.Connection) -> None:  # type: ignore[type-arg]
        with conn, conn.cursor() as cursor:
            while not self._stop.wait(0.2):
                cursor.execute(
                    f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{USER}'"
                )
                row = cursor.fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.peak


class Churn:
    """With FLEET_CHURN=1, adds 1 to every tenant's processed counts once a second."""

    def __init__(self, tenants: int) -> None:
        self._tenants = tenants
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if CHURN:
            self._thread.start()

    def _run(self) -> None:
        with pymysql.connect(**ROOT) as conn, conn.cursor() as cursor:
            while not self._stop.wait(1.0):
                for t in range(self._tenants):
                    cursor.execute(f"UPDATE {PREFIX}{t}.queue_stats SET processed = processed + 1")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


def runs_per_job(text: str) -> dict[tuple[str, str], float]:
    samples = parse_samples(text)
    runs: dict[tuple[str, str], float] = {}
    for (name, labels), value in samples.items():
        if name == "cockpit_collection_runs_total":
            found = dict(labels)
            runs[(found["tenant"], found["query"])] = value
    return runs


@dataclass
class Result:
    cpu_per_execution_ms: float
    executions: float
    p50_ms: float
    series: int
    rss_mb: float
    connections: int
    note: str


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def static_config(tenants: int) -> str:
    """OURS with one DSN per tenant in `tenants:` instead of tenant_discovery."""
    entries = "".join(
        f"  - {{id: t{t:05d}, mysql: {{dsn: 'mysql://{USER}@127.0.0.1:3306/{PREFIX}{t}',"
        " password_env: FLEET_PASSWORD}}\n"
        for t in range(tenants)
    )
    queries = OURS[OURS.index("queries:") :]
    return f"defaults: {{interval: {INTERVAL}s, timeout: {TIMEOUT}}}\ntenants:\n{entries}{queries}"


def measure_ours(tenants: int, scratch: Path, config_kind: str = "discovery") -> Result:
    config = scratch / "cockpit.yaml"
    config.write_text(OURS if config_kind == "discovery" else static_config(tenants))
    port = free_port()
    env = {**os.environ, "FLEET_PASSWORD": PASSWORD}
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json",
         "--state.dir", str(scratch / "state")],
        stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    watch, churn = ConnectionWatch(), Churn(tenants)
    try:
        wait_up(port)
        time.sleep(WARMUP)
        cpu0, runs0 = cpu_seconds(process.pid), runs_per_job(scrape(port))
        time.sleep(MEASURE)
        cpu1, text = cpu_seconds(process.pid), scrape(port)
        runs1 = runs_per_job(text)
        p50 = scrape_p50(port)
        rss = peak_rss_mb(process.pid)
    finally:
        connections = watch.stop()
        churn.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    executions = sum(runs1.values()) - sum(runs0.values())
    return Result(
        (cpu1 - cpu0) / executions * 1000, executions, p50 * 1000, series_count(text), rss,
        connections, _every_interval(text, runs0, runs1, tenants),
    )  # fmt: skip


def _every_interval(text: str, runs0: dict, runs1: dict, tenants: int) -> str:
    """Whether every job ran in every interval of the window and its last run succeeded."""
    samples = parse_samples(text)
    failing = sum(1 for (n, _), v in samples.items() if n == "cockpit_collection_success" and not v)
    errors = sum(v for (n, _), v in samples.items() if n == "cockpit_collection_errors_total")
    intervals = int(MEASURE // INTERVAL)
    short = [job for job in runs1 if runs1[job] - runs0.get(job, 0) < intervals]
    jobs = len(runs1)
    return (
        f"{jobs} jobs (expected {tenants * 2}); {len(short)} ran fewer than {intervals} times in"
        f" {MEASURE:.0f}s; {failing} failing now; {errors:.0f} failed runs in all"
    )


def measure_peer(tenants: int, scratch: Path) -> Result:
    config = scratch / "sql_exporter.yml"
    config.write_text(peer_config(tenants))
    port = free_port()
    env = {**os.environ, "LOGLEVEL": "warn", "GOMAXPROCS": str(os.cpu_count() or 1)}
    process = subprocess.Popen(
        ["prometheus-sql-exporter", "-config.file", str(config),
         "-web.listen-address", f"127.0.0.1:{port}"],
        stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    watch, churn = ConnectionWatch(), Churn(tenants)
    try:
        time.sleep(WARMUP)
        cpu0 = cpu_seconds(process.pid)
        time.sleep(MEASURE)
        cpu1 = cpu_seconds(process.pid)
        rss = peak_rss_mb(process.pid)
        # Its scrape waits for collection: slow at fleet size, so it gets two minutes. A
        # scrape it drops (it closed the connection at 1,000 once) costs the figure, not the
        # run's CPU measured above.
        text, p50 = "", float("inf")
        with contextlib.suppress(OSError, http.client.HTTPException):
            text = scrape(port, timeout=120)
        with contextlib.suppress(OSError, http.client.HTTPException):
            p50 = scrape_p50(port)
    finally:
        connections = watch.stop()
        churn.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    # sql_exporter counts no executions: the schedule implies one per query, connection
    # and interval (fewer if its rounds ran late, which flatters it).
    executions = tenants * 2 * MEASURE / INTERVAL
    note = "executions implied by the schedule"
    if not text:
        note += "; /metrics did not answer within 120 s (no series count)"
    if p50 == float("inf"):
        note += "; a /metrics of the 20 timed failed (p50 infinite)"
    return Result(
        (cpu1 - cpu0) / executions * 1000, executions, p50 * 1000, series_count(text), rss,
        connections, note,
    )  # fmt: skip


def measure_peer_at(
    cursor: pymysql.cursors.Cursor, tenants: int, scratch: Path, max_connections: int
) -> Result:
    """The peer, with max_connections raised for its turn only (never in a smoke run)."""
    if TINY:  # a few databases: the server's own limit is room enough
        return measure_peer(tenants, scratch)
    # One connection per database for the peer, plus headroom for others.
    cursor.execute(f"SET GLOBAL max_connections = {tenants + 200}")
    try:
        return measure_peer(tenants, scratch)
    finally:
        cursor.execute(f"SET GLOBAL max_connections = {max_connections}")


def report(tenants: int, ours: Result, peer: Result, kind: str) -> None:
    print(f"\n{tenants} tenant databases ({kind}), 2 queries each every {INTERVAL}s,", end=" ")
    print(f"{MEASURE:.0f}s measured" + (", processed changing every second" if CHURN else ""))
    print(f"{'':28}{'cockpit-exporter':>18}{'sql_exporter 0.4.5':>20}{'ratio':>8}")
    rows = (
        ("CPU per execution (ms)", ours.cpu_per_execution_ms, peer.cpu_per_execution_ms, 3),
        ("/metrics p50 (ms)", ours.p50_ms, peer.p50_ms, 1),
        ("series", ours.series, peer.series, 0),
        ("peak RSS (MB)", ours.rss_mb, peer.rss_mb, 0),
        ("peak open connections", ours.connections, peer.connections, 0),
    )
    # The peer needs a connection per database: holding far fewer, most of the executions
    # its schedule implies never ran, and its CPU per execution compares with nothing.
    comparable = peer.connections >= 0.95 * tenants
    for name, mine, theirs, digits in rows:
        ratio = mine / theirs if theirs else float("nan")
        shown = f"{ratio:>8.2f}" if comparable or name == "peak open connections" else f"{'n/c':>8}"
        print(f"{name:28}{mine:>18.{digits}f}{theirs:>20.{digits}f}{shown}")
    print(f"cockpit-exporter: {ours.executions:.0f} executions; {ours.note}")
    print(f"sql_exporter: {peer.executions:.0f} {peer.note}")
    if not comparable:
        print(
            f"not comparable (n/c): sql_exporter held at most {peer.connections} connections"
            f" for {tenants} databases, so most executions its schedule implies never ran"
        )


def main() -> None:
    root = pymysql.connect(**ROOT)
    with root.cursor() as cursor:
        cursor.execute("SELECT @@max_connections")
        (max_connections,) = cursor.fetchone()
        for tenants in SIZES:
            drop_fleet(cursor)
            started = time.monotonic()
            create_fleet(cursor, tenants)
            print(f"created {tenants} databases in {time.monotonic() - started:.0f}s", flush=True)
            try:
                with tempfile.TemporaryDirectory() as scratch:
                    ours = {kind: measure_ours(tenants, Path(scratch), kind) for kind in CONFIGS}
                    print(f"cockpit-exporter at {tenants}: {ours}", flush=True)
                    peer = measure_peer_at(cursor, tenants, Path(scratch), max_connections)
                for kind, result in ours.items():
                    report(tenants, result, peer, kind)
            finally:
                drop_fleet(cursor)
    root.close()


if __name__ == "__main__":
    main()
