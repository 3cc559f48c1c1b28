"""5,000 tenants over 4 shards: what one shard costs, for sizing (docs/scaling.md).

Each tenant has the platform (the simulator, in its own process) and one SQL query (a shared
MariaDB database, rows per tenant_id). Four exporter processes run shards 0-3 of the same
config. After a warm-up, over a measured window: CPU cores and RSS of each shard, its tenant
count, and whether every job ran on schedule. SHARD_TENANTS, SHARD_SPEED override.

Run: `.venv/bin/python -m tests.bench.shards` (needs the local MariaDB, root, no password).
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql
import yaml

from tests.bench import RUN_ID, sized
from tests.bench.databases import cpu_seconds, scrape, wait_up
from tests.conftest import free_port, parse_samples

TENANTS = int(os.environ.get("SHARD_TENANTS", sized("5000", "8")))
SHARDS, INTERVAL, WARMUP, MEASURE = sized((4, 60, 150.0, 180.0), (2, 2, 2.0, 2.0))
TIMEOUT = sized("20s", "1500ms")
# The simulator ticks every tenant's world each second; on a 2-core machine it must leave
# room for four exporters, so its platform clock runs at half speed by default.
SPEED = float(os.environ.get("SHARD_SPEED", "0.5"))
DATABASE = f"cockpit_shards_bench{RUN_ID}"
ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "autocommit": True}


def seed_database() -> None:
    connection = pymysql.connect(**ROOT)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
        cursor.execute(
            f"CREATE TABLE {DATABASE}.work_items (tenant_id INT, queue VARCHAR(20),"
            " status VARCHAR(20), INDEX (tenant_id))"
        )
        rows = [(t, f"q{i % 4}", f"s{i % 5}") for t in range(1, TENANTS + 1) for i in range(40)]
        cursor.executemany(f"INSERT INTO {DATABASE}.work_items VALUES (%s, %s, %s)", rows)
    connection.close()


def drop_database() -> None:
    connection = pymysql.connect(**ROOT)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    connection.close()


def write_config(simulated: Path, out: Path) -> None:
    document = yaml.safe_load(simulated.read_text())
    document["defaults"] = {"interval": f"{INTERVAL}s", "timeout": TIMEOUT}
    for number, tenant in enumerate(document["tenants"], start=1):
        tenant["mysql"] = {"dsn": f"mysql://root@127.0.0.1:3306/{DATABASE}"}
        tenant["params"] = {"tenant_id": number}
    document["queries"] = [{
        "name": "work_items",
        "sql": "SELECT queue, status, COUNT(*) AS items FROM work_items"
               " WHERE tenant_id = :tenant_id GROUP BY queue, status",
        "metrics": [{"name": "cockpit_work_items", "type": "gauge", "help": "Items.",
                     "labels": ["queue", "status"], "value": "items"}],
    }]  # fmt: skip
    out.write_text(yaml.safe_dump(document))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def job_runs(text: str) -> tuple[dict[tuple[str, str, str], float], float, float]:
    """Runs per (tenant, source, query), failed runs in all, and tenants owned."""
    runs: dict[tuple[str, str, str], float] = {}
    failed = owned = 0.0
    for (name, labels), value in parse_samples(text).items():
        fields = dict(labels)
        if name == "cockpit_collection_runs_total":
            runs[(fields["tenant"], fields["source"], fields["query"])] = value
        elif name == "cockpit_collection_errors_total":
            failed += value
        elif name == "cockpit_exporter_shard_tenants":
            owned = value
    return runs, failed, owned


def main() -> None:
    seed_database()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            simulated = work / "simulated.yaml"
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "exporter", "simulate", "--tenants", str(TENANTS),
                 "--port", str(free_port()), "--speed", str(SPEED), "--write-config",
                 str(simulated), "--log.level", "warning"],
            ))  # fmt: skip
            while not simulated.exists():
                time.sleep(1)
            time.sleep(2)  # the file is written whole, then the simulator serves
            write_config(simulated, work / "config.yaml")
            ports = [free_port() for _ in range(SHARDS)]
            shards = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "exporter",
                        "--config",
                        str(work / "config.yaml"),
                        "--shard",
                        str(i),
                        "--total-shards",
                        str(SHARDS),
                        "--log.level",
                        "error",
                        "--web.listen-address",
                        f"127.0.0.1:{port}",
                        "--state.dir",
                        str(work / f"state-{i}"),
                    ],
                )
                for i, port in enumerate(ports)
            ]
            processes += shards
            # The same config, almost no tenants: what a shard costs before its tenants.
            base_port = free_port()
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "exporter", "--config", str(work / "config.yaml"),
                 "--shard", "0", "--total-shards", "1000", "--log.level", "error",
                 "--web.listen-address", f"127.0.0.1:{base_port}",
                 "--state.dir", str(work / "state-base")],
            ))  # fmt: skip
            try:
                measure(shards, ports, processes[0])
                base = job_runs(scrape(base_port))[2]
                print(f"a shard with {base:.0f} tenants of the same config:"
                      f" RSS {rss_mb(processes[-1].pid):.0f} MB")  # fmt: skip
            finally:  # before the directory goes: the shards save their state as they stop
                stop(processes)
    finally:
        stop(processes)
        drop_database()


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def measure(
    shards: list[subprocess.Popen[bytes]], ports: list[int], sim: subprocess.Popen[bytes]
) -> None:
    for port in ports:
        wait_up(port)
    time.sleep(WARMUP)
    started = time.monotonic()
    cpu0 = [cpu_seconds(p.pid) for p in shards]
    sim_cpu0 = cpu_seconds(sim.pid)
    before = [job_runs(scrape(port, timeout=60)) for port in ports]
    time.sleep(MEASURE)
    window = time.monotonic() - started
    cpu1 = [cpu_seconds(p.pid) for p in shards]
    sim_cpu1 = cpu_seconds(sim.pid)
    after = [job_runs(scrape(port, timeout=60)) for port in ports]
    rss = [rss_mb(p.pid) for p in shards]
    intervals = int(MEASURE // INTERVAL)
    print(f"{TENANTS} tenants, {SHARDS} shards, interval {INTERVAL}s, platform speed {SPEED:g}x,"
          f" measured {window:.0f}s after {WARMUP:.0f}s")  # fmt: skip
    total_cores = total_rss = 0.0
    for i in range(SHARDS):
        (runs0, failed0, _), (runs1, failed1, owned) = before[i], after[i]
        cores = (cpu1[i] - cpu0[i]) / window
        short = sum(1 for job in runs1 if runs1[job] - runs0.get(job, 0) < intervals)
        total_cores, total_rss = total_cores + cores, total_rss + rss[i]
        print(f"shard {i}: {owned:.0f} tenants, {len(runs1)} jobs, CPU {cores * 100:.1f}% of a"
              f" core, RSS {rss[i]:.0f} MB, jobs that ran fewer than {intervals} times: {short},"
              f" failed runs in the window: {failed1 - failed0:.0f}")  # fmt: skip
    print(f"all shards: CPU {total_cores:.2f} cores, RSS {total_rss:.0f} MB")
    per_gb = TENANTS / (total_rss / 1024)
    print(f"tenants per core: {TENANTS / total_cores:.0f}; tenants per GB: {per_gb:.0f}")
    print(f"simulator: CPU {(sim_cpu1 - sim_cpu0) / window * 100:.0f}% of a core")


if __name__ == "__main__":
    main()
