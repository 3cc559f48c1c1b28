"""Tracing with the OTLP collector down: RSS and scrape latency stay flat, drops are counted.

Two exporter processes poll the same simulated tenants at the same time: one with tracing
off (the baseline) and one sending traces to a loopback port nobody listens on. Every
`SAMPLE_EVERY` seconds each one's RSS and the latency of a gzip scrape are read. Reported:
the RSS slope after the first minute (share of the mean per 10 minutes), the median scrape
latency of the first and the last minute, the ratio of the traced process to the baseline,
and the spans the traced one dropped (counted, never kept).

Run: `make bench` (5 minutes), or `BENCH_TRACING_SECONDS=60 BENCH_TRACING_TENANTS=50
python -m tests.bench.tracing`.
"""

import gzip
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from tests.bench import sized
from tests.bench.soak import process_stats, slope_per_10_minutes, wait_http
from tests.conftest import free_port, parse_samples

SECONDS = float(os.environ.get("BENCH_TRACING_SECONDS", sized("300", "3")))
TENANTS = int(os.environ.get("BENCH_TRACING_TENANTS", sized("200", "3")))
SAMPLE_EVERY = min(10.0, SECONDS / 6)
WARM_UP = min(60.0, SECONDS / 5)
DROPPED = "cockpit_exporter_spans_dropped_total"


def scrape(port: int) -> tuple[float, str]:
    """Seconds a gzip scrape took, and the text."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    took = time.perf_counter() - began
    return took, gzip.decompress(body).decode()


def exporter(config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """An exporter process on `port`, its log discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def shorter_interval(config: Path) -> None:
    """Poll every 10 s, so a short run still makes many traces."""
    document = yaml.safe_load(config.read_text())
    document["defaults"] = {**document.get("defaults", {}), "interval": "10s", "timeout": "8s"}
    config.write_text(yaml.safe_dump(document))


def measure() -> dict[str, dict[str, float]]:
    """Run both exporters side by side; their RSS, latency and dropped spans."""
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "platform.yaml"
        sim = subprocess.Popen(
            [sys.executable, "-m", "exporter", "simulate", "--tenants", str(TENANTS),
             "--port", str(free_port()), "--write-config", str(config), "--log.level", "error"],
        )  # fmt: skip
        processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            deadline = time.monotonic() + 120
            while not config.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            shorter_interval(config)
            dead = f"http://127.0.0.1:{free_port()}"
            for name, extra in (("off", ()), ("dead collector", ("--tracing.otlp-endpoint", dead))):
                port = free_port()
                processes[name] = (exporter(config, port, *extra), port)
            for _, port in processes.values():
                wait_http(f"http://127.0.0.1:{port}/healthz")
            return _sample(processes)
        finally:
            for process, _ in processes.values():
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            sim.send_signal(signal.SIGTERM)
            sim.wait(timeout=60)


def _sample(processes: dict[str, tuple[subprocess.Popen[bytes], int]]) -> dict:
    began = time.monotonic()
    points: dict[str, list[tuple[float, float, float]]] = {n: [] for n in processes}
    texts: dict[str, str] = {}
    while time.monotonic() - began < SECONDS:
        time.sleep(SAMPLE_EVERY)
        for name, (process, port) in processes.items():
            latency, texts[name] = scrape(port)
            rss, _ = process_stats(process.pid)
            points[name].append((time.monotonic() - began, rss, latency))
    results = {}
    for name, series in points.items():
        steady = [(t, rss) for t, rss, _ in series if t >= WARM_UP]
        first = [lat for t, _, lat in series if t <= WARM_UP + 60]
        last = [lat for t, _, lat in series if t >= SECONDS - 60]
        samples = parse_samples(texts[name])
        results[name] = {
            "rss_mb": series[-1][1],
            "rss_slope": slope_per_10_minutes(steady),
            "latency_first_ms": statistics.median(first) * 1000,
            "latency_last_ms": statistics.median(last) * 1000,
            "dropped": samples.get((DROPPED, frozenset()), 0.0),
            "rss_by_minute": [rss for t, rss, _ in series if int(t) % 60 < SAMPLE_EVERY],
        }
    return results


def main() -> None:
    results = measure()
    base, traced = results["off"], results["dead collector"]
    print(f"{TENANTS} tenants every 10 s, {SECONDS:.0f} s, tracing to a dead collector vs off")
    for name, figures in results.items():
        print(
            f"  {name:15} RSS {figures['rss_mb']:.0f} MB (slope {figures['rss_slope']:+.2%}"
            f" per 10 min), /metrics {figures['latency_first_ms']:.1f} ms first minute,"
            f" {figures['latency_last_ms']:.1f} ms last minute, spans dropped"
            f" {figures['dropped']:.0f}"
        )
        minutes = " ".join(f"{r:.0f}" for r in figures["rss_by_minute"])
        print(f"  {'':15} RSS by minute (MB): {minutes}")
    print(
        f"  ratio traced/off: RSS {traced['rss_mb'] / base['rss_mb']:.2f},"
        f" /metrics latency {traced['latency_last_ms'] / base['latency_last_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
