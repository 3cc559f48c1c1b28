"""Hostile network and upstreams: the same attacks on a baseline commit and on this tree.

Each scenario starts the real exporter as its own process (`python -m exporter` run from a
git worktree of the baseline, then from this checkout) against hostile servers and clients
on loopback, and measures what the issue measured:

- upstream: a 1 MB gzip body that inflates to 1 GB, and a 34 MB body of a million items,
  from http_json endpoints: peak RSS, the slowest of the /healthz probes sent every 50 ms,
  whether the bodies fail with `too_large` and the third tenant stays fresh;
- dense: the largest body the value bound admits (1,048,576 short floats, the slowest kind
  to decode): the slowest /healthz probe while it is decoded;
- trickle: 1,100 connections trickling headers (a line every 5 s) under `ulimit -n 1024`
  for 40 s: /healthz probes that
  fail or take over 2 s, an authenticated scrape, the log's growth;
- logins: the wait of a correct, uncached login while 500 wrong guesses from 50 addresses
  are under way, the median time of a wrong password for a cost-10 user, a cost-12 user and
  an unknown user, and the log lines 5,000 `Authorization: Basic !!` requests write.

Run: `make bench` (baseline: the last commit before the hostile-network work,
BENCH_HOSTILE_BASELINE to change it; BENCH_HOSTILE_ONLY=trickle,logins for some), or
`python -m tests.bench.hostile REF`.
"""

import asyncio
import base64
import contextlib
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from aiohttp import web

from tests.bench import TINY, sized
from tests.conftest import free_port
from tests.hostile import Server, gzip_bomb, many_items

ROOT = Path(__file__).parent.parent.parent
BASELINE = os.environ.get("BENCH_HOSTILE_BASELINE", "25858eb")
PROBE_TIMEOUT = 2.0
TRICKLE_EVERY, TRICKLE_FOR = 5.0, 40.0
ITEMS = "[{name: hostile_items, type: gauge, help: Items., items: '$[*]'}]"


class Exporter:
    """One exporter process from `tree`, its log in a file."""

    def __init__(self, tree: Path, work: Path, config: str, web: str | None = None) -> None:
        self.tree, self.work, self.port = tree, work, free_port()
        self.config = work / "config.yaml"
        self.config.write_text(config)
        self.web = None
        if web is not None:
            self.web = work / "web.yaml"
            self.web.write_text(web)
        self.log = work / "exporter.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ulimit: int | None = None) -> None:
        args = [
            sys.executable,
            "-m",
            "exporter",
            "--config",
            str(self.config),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            "--log.format",
            "logfmt",
        ]
        if self.web is not None:
            args += ["--web.config.file", str(self.web)]
        if ulimit is not None:
            args = ["bash", "-c", f'ulimit -n {ulimit} && exec "$@"', "bash", *args]
        with self.log.open("w") as sink:
            self.process = await asyncio.create_subprocess_exec(
                *args, cwd=self.tree, stdout=sink, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(self.tree)},
            )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.tree}: the exporter did not start: {self.log.read_text()}")

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def probing(url: str, until: Callable[[], Awaitable[bool]], every: float, most: float
                  ) -> tuple[list[float], int]:  # fmt: skip
    """/healthz every `every` s until `until()` or `most` s: latencies, and probes failed."""
    latencies, failed = [], 0
    deadline = time.monotonic() + most
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline and not await until():
            began = time.monotonic()
            try:
                async with session.get(url + "/healthz") as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.monotonic() - began)
            failed += not ok
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))
    return latencies, failed


async def metrics(url: str, headers: dict[str, str] | None = None) -> str:
    """The scrape, or "" when it fails or takes over 10 s."""
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url + "/metrics", headers=headers) as response,
        ):
            return await response.text() if response.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError):
        return ""


def endpoint(tenant: str, url: str) -> str:
    return (
        f"  - id: {tenant}\n    http_json:\n      - {{name: api, url: '{url}', metrics: {ITEMS}}}\n"
    )


async def upstream(tree: Path, work: Path) -> dict[str, Any]:
    """The gzip bomb and the million-item body, beside a well-behaved tenant."""
    bomb, flood = gzip_bomb(), many_items()
    server = await Server().start()

    async def bombing(_: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"},
                            content_type="application/json")  # fmt: skip

    async def flooding(_: web.Request) -> web.Response:
        return web.Response(body=flood, content_type="application/json")

    server.route("GET", "/bomb", bombing)
    server.route("GET", "/flood", flooding)
    server.json("/good", [{"id": 1}])
    config = ("defaults: {interval: 5s, timeout: 5s}\ntenants:\n"
              + endpoint("bomb", server.url + "/bomb") + endpoint("flood", server.url + "/flood")
              + endpoint("good", server.url + "/good"))  # fmt: skip
    exporter = Exporter(tree, work, config)
    await exporter.start()
    started = time.monotonic()

    async def both_ran() -> bool:  # three runs each, or 40 s
        text = await metrics(exporter.url) if time.monotonic() - started > 16 else ""
        runs = [
            line
            for line in text.splitlines()
            if line.startswith("cockpit_collection_runs_total") and 'query="api"' in line
        ]
        return len(runs) == 3 and all(float(line.split()[-1]) >= 3 for line in runs)

    try:
        latencies, failed = await probing(exporter.url, both_ran, 0.05, 40)
        text = await metrics(exporter.url)
        peak = exporter.peak_rss_mb()
    finally:
        await exporter.stop()
        await server.stop()
    too_large = [line for line in text.splitlines() if 'reason="too_large"' in line]
    fresh = 'cockpit_collection_success{tenant="good",source="http_json",query="api"} 1'
    return {
        "peak RSS, MB": peak,
        "slowest /healthz, s": max(latencies),
        "/healthz failed": failed,
        "bodies failed too_large": sum(float(line.split()[-1]) > 0 for line in too_large),
        "good tenant fresh": int(fresh in text),
    }


async def dense(tree: Path, work: Path) -> dict[str, Any]:
    """The largest body the value bound admits, of the kind slowest to decode."""
    # One value under the bound: n floats make n - 1 commas and one bracket.
    body = ("[" + ",".join(["1.5"] * ((1 << 20) - 1)) + "]").encode()
    server = await Server().start()

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    server.route("GET", "/dense", answer)
    metric = "[{name: hostile_values, type: gauge, help: V., items: '$[*]', value: '$'}]"
    config = (
        "defaults: {interval: 3s, timeout: 3s, max_series: 10}\ntenants:\n  - id: dense\n"
        f"    http_json:\n      - {{name: api, url: '{server.url}/dense', metrics: {metric}}}\n"
    )
    exporter = Exporter(tree, work, config)
    await exporter.start()
    started = time.monotonic()

    async def enough() -> bool:
        return time.monotonic() - started > 12

    try:
        latencies, failed = await probing(exporter.url, enough, 0.02, 15)
        text = await metrics(exporter.url)
    finally:
        await exporter.stop()
        await server.stop()
    lines = text.splitlines()
    runs = [line for line in lines if line.startswith("cockpit_collection_runs_total")]
    decoded = [line for line in lines if line.startswith("cockpit_collection_success{")]
    return {
        "slowest /healthz, s": max(latencies),
        "/healthz failed": failed,
        "body, MB": len(body) / 1e6,
        "runs": float(runs[0].split()[-1]) if runs else 0.0,
        "last run decoded it (success 1)": int(bool(decoded) and decoded[0].endswith(" 1")),
    }


async def _trickler(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            while not stop.is_set() and not reader.at_eof():
                await asyncio.sleep(TRICKLE_EVERY)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def sqlite_tenant(work: Path) -> str:
    path = work / "data.db"
    sqlite3.connect(path).close()
    return (f"tenants:\n  - {{id: acme, mysql: {{dsn: 'sqlite:///{path}'}}}}\nqueries:\n"
            "  - {name: one, sql: SELECT 1 AS n, metrics: [{name: probe_one, type: gauge,"
            " help: One., value: n}]}\n")  # fmt: skip


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def trickle(tree: Path, work: Path) -> dict[str, Any]:
    """1,100 connections that trickle a header line every 5 s, under ulimit -n 1024, 40 s."""
    hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(rounds=4)).decode()
    exporter = Exporter(
        tree, work, sqlite_tenant(work), f"basic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    await exporter.start(ulimit=1024)
    size = exporter.log.stat().st_size
    # The attackers in a process of their own: their reconnect loops must not delay the
    # probes' own event loop, or the probes would measure us, not the exporter.
    attack = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.hostile", "trickle-attack", str(exporter.port),
        cwd=ROOT,
    )  # fmt: skip
    started = time.monotonic()

    async def over() -> bool:
        return time.monotonic() - started > TRICKLE_FOR

    try:
        await asyncio.sleep(2.0)  # the connections are open
        latencies, failed = await probing(exporter.url, over, 0.2, TRICKLE_FOR + 1)
        scraped = await metrics(exporter.url, basic("prometheus", "scrape"))
    finally:
        attack.terminate()
        await attack.wait()
        grown = exporter.log.stat().st_size - size
        await exporter.stop()
    return {
        "/healthz failed or over 2 s": failed + sum(t > PROBE_TIMEOUT for t in latencies),
        "/healthz probes": len(latencies),
        "slowest /healthz, s": max(latencies),
        "authenticated scrape": int("probe_one" in scraped),
        "log growth, MB": grown / 1e6,
    }


async def logins(tree: Path, work: Path) -> dict[str, Any]:
    """Guess floods, timing of refusals, and the log a spray of bad credentials writes."""
    users = {"ops": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10)).decode(),
             "dear": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=12)).decode()}  # fmt: skip
    web_config = "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in users.items())
    exporter = Exporter(tree, work, sqlite_tenant(work), web_config)
    await exporter.start()
    url = exporter.url + "/metrics"
    try:
        medians = {}
        async with aiohttp.ClientSession() as session:
            for user in ("ops", "dear", "nobody"):  # each from its own address: no blocking
                times = []
                for n in range(9):
                    connector = aiohttp.TCPConnector(
                        local_addr=(f"127.0.1.{n + 10 * len(medians)}", 0)
                    )
                    async with aiohttp.ClientSession(connector=connector) as one:
                        began = time.monotonic()
                        async with one.get(url, headers=basic(user, f"wrong{n}")) as response:
                            await response.read()
                        times.append(time.monotonic() - began)
                medians[user] = statistics.median(times)
        sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            local_addr=(f"127.0.0.{a}", 0))) for a in range(2, 52)]  # fmt: skip

        async def guess(session: aiohttp.ClientSession, n: int) -> None:
            async with session.get(url, headers=basic("ops", f"guess{n}")) as response:
                await response.read()

        flood = [asyncio.create_task(guess(s, n)) for s in sessions for n in range(10)]
        await asyncio.sleep(1.0)
        connector = aiohttp.TCPConnector(local_addr=("127.0.2.1", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            began = time.monotonic()
            async with session.get(url, headers=basic("ops", "right")) as response:
                correct = (time.monotonic() - began, response.status)
        await asyncio.gather(*flood, return_exceptions=True)
        for session in sessions:
            await session.close()
        before = len(exporter.log.read_text().splitlines())
        connector = aiohttp.TCPConnector(limit=20, local_addr=("127.0.3.1", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(50):
                batch = [
                    session.get(url, headers={"Authorization": "Basic !!"}) for _ in range(100)
                ]
                for response in await asyncio.gather(*batch):
                    response.release()
        await asyncio.sleep(1.1)
        lines = len(exporter.log.read_text().splitlines()) - before
    finally:
        await exporter.stop()
    unknown_vs_known = max(
        abs(medians["nobody"] - medians[u]) / medians[u] for u in ("ops", "dear")
    )
    return {
        "correct login during the flood, s": correct[0],
        "correct login status": correct[1],
        "wrong password median, cost 10, s": medians["ops"],
        "wrong password median, cost 12, s": medians["dear"],
        "unknown user median, s": medians["nobody"],
        "largest unknown/known difference": unknown_vs_known,
        "log lines for 5,000 bad headers": lines,
    }


SCENARIOS = {"upstream": upstream, "dense": dense, "trickle": trickle, "logins": logins}


async def run(trees: dict[str, Path]) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    # A smoke run tries one attack, on this tree only (see main).
    only = os.environ.get("BENCH_HOSTILE_ONLY", sized(",".join(SCENARIOS), "upstream")).split(",")
    for name, scenario in SCENARIOS.items():
        if name not in only:
            continue
        for label, tree in trees.items():
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
                sys.stderr.write(f"{name}: {label}...\n")
                results.setdefault(name, {})[label] = await scenario(tree, Path(work))
    return results


def report(results: dict[str, dict[str, dict[str, Any]]], labels: list[str]) -> None:
    for name, by_tree in results.items():
        print(f"\n{name}")
        keys = list(by_tree[labels[-1]])
        for key in keys:
            values = [by_tree[label].get(key) for label in labels]
            shown = "  ".join(
                f"{v:>12.3f}" if isinstance(v, float) else f"{v!s:>12}" for v in values
            )
            ratio = ""
            if all(isinstance(v, int | float) and v for v in values) and len(values) == 2:
                ratio = f"  ({values[1] / values[0]:.3g}x the baseline)"
            print(f"  {key:38s}{shown}{ratio}")


async def _attack(port: int) -> None:
    stop = asyncio.Event()
    await asyncio.gather(*(_trickler(port, stop) for _ in range(1100)))


def main() -> None:
    if sys.argv[1:2] == ["trickle-attack"]:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
        asyncio.run(_attack(int(sys.argv[2])))
        return
    ref = sys.argv[1] if len(sys.argv) > 1 else BASELINE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    if TINY:
        trees = {"this tree": ROOT}
        report(asyncio.run(run(trees)), list(trees))
        return
    worktree = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), ref], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    try:
        trees = {f"baseline {ref}": worktree, "this tree": ROOT}
        results = asyncio.run(run(trees))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(worktree, ignore_errors=True)
    print(f"columns: {'  '.join(trees)}")
    report(results, list(trees))


if __name__ == "__main__":
    main()
