"""1,000 simulated tenants polled every 30 s: exporter CPU per tenant poll and /metrics latency.

The simulator runs in its own process. Run: `make bench`.
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

from tests.bench import sized
from tests.bench.databases import cpu_seconds, peak_rss_mb
from tests.bench.soak import wait_http
from tests.conftest import free_port, parse_samples

TENANTS = int(os.environ.get("BENCH_PLATFORM_TENANTS", sized("1000", "3")))
WARMUP = float(os.environ.get("BENCH_PLATFORM_WARMUP", sized("60", "2")))
MEASURE = float(os.environ.get("BENCH_PLATFORM_MEASURE", sized("60", "2")))


def start_exporter(config: Path, port: int) -> subprocess.Popen[bytes]:
    """The exporter on `config`, serving on loopback `port`, its log discarded."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


def scrape_latency(port: int, rounds: int = sized(20, 2)) -> float:
    """Median seconds of a gzip scrape to its last byte, as Prometheus scrapes."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}
    )
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def polls(port: int) -> tuple[float, float]:
    """Completed polls (runs endpoint) and failed ones, over all tenants."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        samples = parse_samples(response.read().decode())
    done = failed = 0.0
    for (name, labels), value in samples.items():
        fields = dict(labels)
        if fields.get("source") != "platform" or fields.get("query") != "runs":
            continue
        if name == "cockpit_collection_runs_total":
            done += value
        elif name == "cockpit_collection_errors_total":
            failed += value
    return done, failed


def wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not path.exists():
        raise SystemExit("the simulator did not write its config")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "platform.yaml"
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "simulate",
                "--tenants",
                str(TENANTS),
                "--port",
                str(free_port()),
                "--write-config",
                str(config),
                "--log.level",
                "warning",
            ],
        )
        port = free_port()
        exporter = None
        try:
            wait_for(config, 120)
            exporter = start_exporter(config, port)
            time.sleep(WARMUP)
            # Counters are read right after the CPU times; the scrape's parse time here
            # lengthens the window, so rates use the measured window, not MEASURE.
            started, cpu0 = time.monotonic(), cpu_seconds(exporter.pid)
            polls0, failed0 = polls(port)
            time.sleep(MEASURE)
            window, cpu1 = time.monotonic() - started, cpu_seconds(exporter.pid)
            polls1, failed1 = polls(port)
            latency, rss = scrape_latency(port), peak_rss_mb(exporter.pid)
        finally:
            for process in (exporter, sim):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
    cpu, done = cpu1 - cpu0, polls1 - polls0
    print(f"tenants: {TENANTS}, interval: 30s, measured: {window:.1f}s")
    implied = TENANTS * window / 30
    failed = failed1 - failed0
    print(f"tenant polls: {done:.0f} (schedule implies {implied:.0f}), failed: {failed:.0f}")
    print(f"exporter CPU: {cpu / window * 100:.1f}% of one core (target <= 10%)")
    print(f"CPU per tenant poll: {cpu / max(done, 1) * 1000:.2f} ms (4 endpoints)")
    print(f"GET /metrics latency (gzip): {latency * 1000:.1f} ms (median of 20; target <= 10 ms)")
    print(f"peak RSS: {rss:.0f} MB (target <= 150 MB)")


if __name__ == "__main__":
    main()
