"""Helpers the test modules share: configs, the real command, waiting, hashing, PromQL."""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import yaml

from tests import platform_helpers


async def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    """Wait until `check()` holds (polled every 50 ms); fail after `seconds`.

    For conditions that need real runs of a real scheduler: the test states what it waits
    for, not how long that takes.
    """
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds}s")
        await asyncio.sleep(0.05)


def until(check: Callable[[], Any], seconds: float, step: float = 1.0) -> Any:
    """The first truthy result of `check()` within `seconds` (polled every `step`), else the
    last one: for processes outside the test's event loop."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


WORK_ITEMS = """
  - name: work_items
    sql: >-
      SELECT queue, status, COUNT(*) AS items, SUM(weight) AS weight FROM work_items
      WHERE tenant_id = :tenant_id GROUP BY queue, status
    timeout: 3s
    metrics:
      - {{name: cockpit_work_items, type: gauge, help: Items., labels: [queue, status],
          value: items}}
      - {{name: cockpit_work_weight, type: gauge, help: Weight., labels: [queue, status],
          value: weight}}
"""


def two_tenants(dsn: str, queries: str = WORK_ITEMS, extra: str = "") -> str:
    return (
        f"defaults: {{interval: 30s, timeout: 5s}}\ntenants:\n"
        f"  - {{id: acme, mysql: {{dsn: '{dsn}'}}, params: {{tenant_id: 1}}}}\n"
        f"  - {{id: globex, mysql: {{dsn: '{dsn}'}}, params: {{tenant_id: 2}}}}\n"
        f"{extra}queries:\n{queries.format()}"
    )


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


def fetch(port: int, path: str = "/metrics", headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return process.returncode, output


async def spawn(*command: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def wait_http(url: str, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered")


async def start_prometheus(
    directory: Path, target: str, port: int, *, flags: tuple[str, ...] = (), **config: Any
) -> asyncio.subprocess.Process:
    """A real Prometheus on `port` scraping `target` every second; `config` joins its file,
    `flags` its command line."""
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "cockpit", "static_configs": [{"targets": [target]}]}],
        **config,
    }))  # fmt: skip
    process = await spawn(
        "prometheus", f"--config.file={path}", f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", *flags,
    )  # fmt: skip
    try:
        await wait_http(f"http://127.0.0.1:{port}/-/ready")
    except BaseException:
        process.terminate()
        await process.wait()
        raise
    return process


def exporter_config(
    sim: platform_helpers.RunningSimulator, tmp_path: Path, hooks: str, dsn: str
) -> str:
    document = yaml.safe_load(sim.config(tmp_path, interval="1s", timeout="1s"))
    document["alerting"] = {"operators": [{"webhook": {"url": f"{hooks}/operators"}}]}
    for tenant in document["tenants"]:
        tenant["receivers"] = [{"webhook": {"url": f"{hooks}/{tenant['id']}"}}]
        tenant["mysql"] = {"dsn": dsn}
    document["queries"] = [
        {
            "name": "items",
            "sql": "SELECT COUNT(*) AS n FROM work_items",
            "interval": "1s",
            "timeout": "1s",
            "metrics": [{"name": "cockpit_items", "type": "gauge", "help": "Items.", "value": "n"}],
        }
    ]
    return yaml.safe_dump(document)


def selectors(node: object) -> set[str]:
    """Metric names selected anywhere in a parsed PromQL expression."""
    found: set[str] = set()
    if isinstance(node, promql_parser.VectorSelector):
        found.add(node.name)
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            found |= selectors(child)
    for child in getattr(node, "args", None) or ():
        found |= selectors(child)
    return found


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def demo_scraped(make_exporter: Any, directory: Path) -> tuple[str, Any, dict]:
    """The demo's config (its data seeded in `directory`), its exporter, and its samples after
    one run of every job against a real simulator."""
    import random

    from exporter.demo import TENANTS, demo_config_text, seed
    from exporter.simulator.main import platform_blocks, start_simulator
    from exporter.simulator.server import Simulator
    from tests.conftest import parse_samples

    seed(directory, random.Random(42))
    simulator = Simulator(list(TENANTS), seed=42)
    runner, url = await start_simulator(simulator, "127.0.0.1", 0)
    try:
        text = demo_config_text(directory, platform_blocks(simulator, url, directory / "secrets"))
        running = await make_exporter(text)
        for job in running.exporter.runner.jobs():
            await running.exporter.run_job(job)
        return text, running, parse_samples(await running.scrape())
    finally:
        await runner.cleanup()
