"""The soak (`make soak`, not part of `make test`): 1,000 simulated tenants with a rotating mix
of faults, scraped every 5 s by a real Prometheus, for SOAK_MINUTES (default 30).

Every minute: the exporter's open file descriptors and its RSS, read every 5 s through the
minute (the median is what the slope is taken of; the first reading is reported too). At the
end: their slope after the warm-up (per 10 minutes), the scrape p99 Prometheus measured, and
whether the run counts in Prometheus equal the simulator's own counts. Platform time is frozen
around the two count readings so both sides describe the same moment. The simulated worlds run
90 minutes before they are served, so the workload is steady from the start.
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.bench import sized
from tests.conftest import free_port, parse_samples

TENANTS = int(os.environ.get("SOAK_TENANTS", sized("1000", "3")))
MINUTES = float(os.environ.get("SOAK_MINUTES", sized("30", "0.1")))
SETTLE = sized((40, 60), (2, 2))  # seconds for the exporter to catch up, before and after
SCRAPE_EVERY = sized("5s", "1s")
# The tiny run's settle is 2 s, so its exporter polls every second to be caught up by then.
POLLING = sized({"interval": "15s", "timeout": "10s"}, {"interval": "1s", "timeout": "1s"})
WARMUP_MINUTES = min(5.0, MINUTES / 3)
# The simulated queues take about 90 platform minutes from an empty world to their steady
# size (docs/reliability.md); a world that is still filling would be measured as growth.
WORLD_WARM_UP = "90m"
# A file name here runs the exporter under tests.bench.allocators, which writes its
# allocators' state to that file once a minute.
ALLOCATORS = os.environ.get("SOAK_ALLOCATORS")
READINGS = 12  # of RSS per minute
FAULTS = [
    {"error_rate": 0.3, "retry_after": 1},
    {"rate_limit_rate": 0.3, "retry_after": 2},
    {"latency": 2.0},
    {"malformed_rate": 0.1},
    {"token_ttl": 5},
]


def call(
    url: str, body: dict[str, Any] | None = None, timeout: float = 30, method: str | None = None
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def spawn(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    err = log.open("wb") if log else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)


def alive(process: subprocess.Popen[bytes], log: Path) -> int:
    """The process's pid, or the end of its log and exit code, as the soak's failure."""
    if (code := process.poll()) is None:
        return process.pid
    raise SystemExit(f"the exporter exited ({code}); its log ends:\n{log.read_text()[-2000:]}")


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} never answered")


def process_stats(pid: int) -> tuple[float, int]:
    """RSS in MB and open file descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def slope_per_10_minutes(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, as a share of the mean, per 10 minutes."""
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return slope * 600 / my


def sim_counts(sim: str, tenants: list[str]) -> dict[str, int]:
    return {
        t: sum(f["count"] for f in call(f"{sim}/admin/tenants/{t}/stats")["finished"])
        for t in tenants
    }


def exporter_counts(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        samples = parse_samples(response.read().decode())
    counts: dict[str, int] = {}
    for (name, labels), value in samples.items():
        if name == "cockpit_runs_finished_total":
            tenant = dict(labels)["tenant"]
            counts[tenant] = counts.get(tenant, 0) + int(value)
    return counts


def prometheus_counts(prom: str) -> dict[str, int]:
    query = urllib.parse.quote("sum by (tenant) (cockpit_runs_finished_total)")
    result = call(f"{prom}/api/v1/query?query={query}")["data"]["result"]
    return {r["metric"]["tenant"]: int(float(r["value"][1])) for r in result}


def settle(sim: str, seconds: float) -> None:
    """Freeze platform time and wait until the exporter has polled everything up to it."""
    call(f"{sim}/admin/clock", {"frozen": True})
    time.sleep(seconds)


def clear_faults(sim: str, tenants: list[str]) -> None:
    for tenant in tenants:
        call(f"{sim}/admin/tenants/{tenant}/faults", method="DELETE")


def main() -> None:
    if not shutil.which("prometheus"):
        raise SystemExit("prometheus missing: `make tools` installs Debian's package")
    work = Path(tempfile.mkdtemp(prefix="cockpit-soak-"))
    sim_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    sim_url, prom_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{prom_port}"
    processes = []
    try:
        config = work / "platform.yaml"
        simulate = ["simulate", "--tenants", str(TENANTS), "--port", str(sim_port)]
        simulate += ["--speed", "4", "--warm-up", WORLD_WARM_UP, "--write-config", str(config)]
        simulate += ["--log.level", "warning"]
        processes.append(spawn(sys.executable, "-m", "exporter", *simulate))
        wait_http(f"{sim_url}/admin/tenants/t0001/stats")
        while not config.exists():
            time.sleep(0.5)
        document = yaml.safe_load(config.read_text())
        document["defaults"] = POLLING
        config.write_text(yaml.safe_dump(document))
        tenants = [t["id"] for t in document["tenants"]]
        probe = ["tests.bench.allocators", ALLOCATORS] if ALLOCATORS else ["exporter"]
        exporter = spawn(sys.executable, "-m", *probe, "--config", str(config),
                         "--state.dir", str(work / "state"), "--log.level", "error",
                         "--web.listen-address", f"127.0.0.1:{exporter_port}",
                         log=work / "exporter.log")  # fmt: skip
        processes.append(exporter)
        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE_EVERY, "scrape_timeout": SCRAPE_EVERY},
            "scrape_configs": [{"job_name": "cockpit", "static_configs": [
                {"targets": [f"127.0.0.1:{exporter_port}"]}]}],
        }))  # fmt: skip
        processes.append(spawn("prometheus", f"--config.file={work / 'prometheus.yml'}",
                               f"--storage.tsdb.path={work / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"))  # fmt: skip
        wait_http(f"http://127.0.0.1:{exporter_port}/readyz", seconds=300)
        wait_http(f"{prom_url}/-/ready")
        settle(sim_url, SETTLE[0])
        start_sim, start_exp = sim_counts(sim_url, tenants), exporter_counts(exporter_port)
        call(f"{sim_url}/admin/clock", {"frozen": False})
        began, rng, samples = time.monotonic(), random.Random(5), []
        print(f"soak: {TENANTS} tenants, {MINUTES:g} min, work dir {work}", flush=True)
        while (elapsed := time.monotonic() - began) < MINUTES * 60:
            clear_faults(sim_url, tenants)  # every minute a new 10% of tenants get a fault
            for tenant in rng.sample(tenants, len(tenants) // 10):
                call(f"{sim_url}/admin/tenants/{tenant}/faults", rng.choice(FAULTS))
            samples.append(minute(elapsed, exporter, work / "exporter.log"))
        clear_faults(sim_url, tenants)
        settle(sim_url, SETTLE[1])
        end_sim, end_prom = sim_counts(sim_url, tenants), prometheus_counts(prom_url)
        report(samples, start_sim, start_exp, end_sim, end_prom, prom_url)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)


def minute(elapsed: float, exporter: subprocess.Popen[bytes], log: Path) -> tuple[float, ...]:
    """One minute of readings: RSS at its start and its median through it, and open fds.

    RSS moves by megabytes within a scrape's few seconds (a body built and compressed), so a
    single reading measures where the scrape was as much as what the process holds; the median
    of readings every 5 s through the minute does not, and a leak raises it just the same.
    """
    period = min(60.0, MINUTES * 20)
    first, fds = process_stats(alive(exporter, log))
    readings = [first]
    for _ in range(READINGS - 1):
        time.sleep(period / READINGS)
        readings.append(process_stats(alive(exporter, log))[0])
    time.sleep(period / READINGS)
    median = statistics.median(readings)
    print(f"minute {elapsed / 60:5.1f}: rss {first:7.1f} MB (through the minute: median"
          f" {median:.1f}, {min(readings):.1f} to {max(readings):.1f}), open fds {fds}",
          flush=True)  # fmt: skip
    return elapsed, first, median, fds


def after_warm_up(prom_url: str, query: str) -> tuple[float, float]:
    """A query's value just after the warm-up and at the end, one point a minute."""
    end = time.time()
    start = end - (MINUTES - WARMUP_MINUTES) * 60
    url = f"{prom_url}/api/v1/query_range?query={urllib.parse.quote(query)}"
    values = call(f"{url}&start={start}&end={end}&step=60")["data"]["result"][0]["values"]
    return float(values[0][1]), float(values[-1][1])


def workload_report(prom_url: str) -> str:
    """What the exporter held after the warm-up and at the end, as Prometheus saw it.

    Growth in RSS may be growth in the workload: series exported (a (tenant, job, reason)
    counter appears when the reason first occurs), or runs queued on the platform, which
    the tracker keeps one record each of.
    """
    series = after_warm_up(prom_url, 'scrape_samples_scraped{job="cockpit"}')
    queued = after_warm_up(prom_url, "sum(cockpit_runs_queued)")
    return (
        f"series per scrape: {series[0]:.0f} after warm-up, {series[1]:.0f} at the end; "
        f"runs queued: {queued[0]:.0f} after warm-up, {queued[1]:.0f} at the end"
    )


def report(samples, start_sim, start_exp, end_sim, end_prom, prom_url) -> None:  # type: ignore[no-untyped-def]
    after = [s for s in samples if s[0] >= WARMUP_MINUTES * 60]
    rss_slope = slope_per_10_minutes([(t, m) for t, _, m, _ in after])
    single_slope = slope_per_10_minutes([(t, r) for t, r, _, _ in after])
    fd_slope = slope_per_10_minutes([(t, f) for t, _, _, f in after])
    query = urllib.parse.quote(
        "quantile_over_time(0.99, scrape_duration_seconds"
        f'{{job="cockpit"}}[{max(60, int(MINUTES * 60))}s])'
    )
    p99 = float(call(f"{prom_url}/api/v1/query?query={query}")["data"]["result"][0]["value"][1])
    print(workload_report(prom_url))
    wrong = {
        t: (end_prom.get(t, 0) - start_exp.get(t, 0), end_sim[t] - start_sim[t])
        for t in end_sim
        if end_prom.get(t, 0) - start_exp.get(t, 0) != end_sim[t] - start_sim[t]
    }
    print(
        f"rss slope after warm-up: {rss_slope:+.2%} per 10 min (target: under 1%),"
        " of each minute's median"
    )
    print(f"  of one reading at each minute's start (as runs 1 to 18): {single_slope:+.2%}")
    print(f"open fd slope after warm-up: {fd_slope:+.2%} per 10 min")
    print(f"scrape p99 (Prometheus): {p99 * 1000:.1f} ms")
    runs = sum(end_sim[t] - start_sim[t] for t in end_sim)
    print(f"runs finished during the soak: {runs}; tenants whose counts differ: {len(wrong)}")
    for tenant, (ours, theirs) in sorted(wrong.items())[:10]:
        print(f"  {tenant}: Prometheus {ours}, simulator {theirs}")


if __name__ == "__main__":
    main()
