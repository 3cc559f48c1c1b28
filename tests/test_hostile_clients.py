"""Hostile clients of our HTTP server: connections that trickle headers, hold keep-alive
idle, or arrive by the thousand under a small open-files limit. The real exporter serves on
loopback (in this process, or its own process where limits and logs are measured)."""

import asyncio
import base64
import contextlib
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import structlog

from exporter.fds import AcceptErrors, connection_cap
from exporter.listener import Guard
from tests.conftest import free_port, key, parse_samples, write

SQLITE_TENANT = """
tenants:
  - {{id: acme, mysql: {{dsn: 'sqlite:///{path}'}}}}
queries:
  - {{name: one, sql: SELECT 1 AS n, metrics: [{{name: probe_one, type: gauge, help: One.,
     value: n}}]}}
"""


def sqlite_config(tmp_path: Path) -> str:
    path = tmp_path / "data.db"
    sqlite3.connect(path).close()
    return SQLITE_TENANT.format(path=path)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def closed_count(exporter, reason: str) -> float:
    samples = await exporter.samples()
    return samples[key("cockpit_exporter_http_connections_closed_total", reason=reason)]


async def test_headers_must_arrive_in_time_but_idle_keep_alive_may_wait(
    make_exporter, tmp_path: Path
) -> None:
    """A connection that sends half a request is closed at the header timeout (counted); a
    keep-alive connection may sit idle past it and then send a whole request, which is
    answered; a second request trickled on a kept connection is timed from its first byte."""
    exporter = await make_exporter(sqlite_config(tmp_path), read_header_timeout=0.5)
    port = exporter.exporter.port
    reader, writer = await connect(port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert await closed_by_server(reader, within=3)
    assert await closed_count(exporter, "header_timeout") == 1

    reader, writer = await connect(port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request)
    assert b"200 OK" in await reader.readuntil(b"ok\n")
    await asyncio.sleep(1.0)  # idle, longer than the header timeout: allowed
    writer.write(request)
    assert b"200 OK" in await reader.readuntil(b"ok\n")
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # then nothing more
    assert await closed_by_server(reader, within=3)
    assert await closed_count(exporter, "header_timeout") == 2


async def test_at_the_cap_the_longest_waiting_connection_makes_room(
    make_exporter, tmp_path: Path
) -> None:
    """With four connections allowed, four idle ones and a fifth: the oldest idle one is
    closed (evicted), the newcomer is served, and no more than four are ever open."""
    exporter = await make_exporter(sqlite_config(tmp_path), max_connections=4)
    port = exporter.exporter.port
    idle = [await connect(port) for _ in range(4)]
    await asyncio.sleep(0.1)
    assert exporter.exporter.guard.open == 4
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 200
    assert await closed_by_server(idle[0][0], within=2)
    assert exporter.exporter.guard.open <= 4
    for reader, _ in idle[1:]:
        assert not await closed_by_server(reader, within=0.05)
    assert await closed_count(exporter, "evicted") >= 1


def test_when_every_connection_is_busy_the_new_one_is_refused() -> None:
    """The cap holds when nothing is evictable: the newcomer is refused and counted."""
    guard = Guard(max_connections=2, header_timeout=10)
    assert guard.admit() and guard.admit()
    assert not guard.admit()
    assert (guard.open, guard.closed["limit"]) == (2, 1)


async def test_a_closed_connection_finishing_its_request_is_not_counted_again() -> None:
    """A connection evicted while aiohttp still finishes a request on it (its handler ends a
    loop turn later) must not come back as evictable: evicting it again freed no room, and
    the open count went one over the cap (513 of 512, seen under the parallel suite)."""
    loop = asyncio.get_running_loop()
    guard = Guard(max_connections=1, header_timeout=10)
    pairs = [socket.socketpair() for _ in range(4)]

    async def connect(index: int) -> Any:
        protocol = guard.factory(asyncio.Protocol)()
        await loop.connect_accepted_socket(lambda: protocol, pairs[index][0])
        return protocol

    try:
        first = await connect(0)
        # Evicted as `admit` does it, and in the same loop turn (before asyncio reports the
        # loss) the request aiohttp had already parsed on it runs a quick handler.
        first.close("evicted")
        first.request_started()
        first.request_finished()
        await connect(1)
        await connect(2)
        fourth = await connect(3)
        assert guard.closed["evicted"] == 3
        assert guard.open == 1 and list(guard._waiting) == [fourth]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_connection_cap_leaves_descriptors_for_collection() -> None:
    """At most half the open-files limit goes to server connections (16 at the least), and
    never more than asked for."""
    assert connection_cap(512, 1024) == 512
    assert connection_cap(512, 600) == 300
    assert connection_cap(512, 20) == 16
    assert connection_cap(100, 65536) == 100
    assert connection_cap(4, 65536) == 4


async def test_accept_errors_are_logged_once_per_interval() -> None:
    """A thousand accept failures (descriptors exhausted) make one log line with their
    count; any other loop error still reaches the default handler."""
    loop = asyncio.get_running_loop()
    handler = AcceptErrors(interval=60)
    loop.set_exception_handler(handler)
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(1000):
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                })  # fmt: skip
        assert handler.count == 1000
        assert [(e["event"], e["error"]) for e in logs] == [
            ("accept failed", "Too many open files")
        ]
    finally:
        loop.set_exception_handler(None)


def under_ulimit(soft: int, hard: int, *args: str) -> list[str]:
    """The exporter command run by a shell that set the open-files limits first."""
    script = f'ulimit -Sn {soft} && ulimit -Hn {hard} && exec "$@"'
    return ["bash", "-c", script, "bash", sys.executable, "-m", "exporter", *args]


@pytest.mark.parametrize(("soft", "hard"), [(1024, 1024), (256, 4096)])
def test_the_soft_limit_is_raised_to_the_hard_one(tmp_path: Path, soft: int, hard: int) -> None:
    """At start the open-files soft limit goes up to the hard limit, and the start line says
    what the process got and how many connections it will hold."""
    path = write(tmp_path / "c.yaml", sqlite_config(tmp_path))
    command = under_ulimit(soft, hard, "--config", str(path), "--log.format", "logfmt",
                           "--web.listen-address", f"127.0.0.1:{free_port()}")  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = next(line for line in process.stdout if "exporter started" in line)
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert f"fd_limit={hard}" in line
    assert f"max_connections={min(512, hard // 2)}" in line


async def _trickle(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """An attacker's connection: headers a line at a time, reopened whenever it is closed."""
    while not stop.is_set():
        try:
            reader, writer = await connect(port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        opened[0] += 1
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            while not stop.is_set() and not reader.at_eof():
                await asyncio.sleep(1.0)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def test_a_thousand_trickling_connections_under_ulimit_1024(tmp_path: Path) -> None:
    """1,100 connections trickling headers at a process limited to 1,024 open files: every
    health probe is answered (within 2 s), an authenticated scrape succeeds, the attackers'
    connections are closed as they come, and the log stays small."""
    password = "scrape-pw-51"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = write(tmp_path / "web.yaml", f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    path = write(tmp_path / "c.yaml", sqlite_config(tmp_path))
    log = tmp_path / "exporter.log"
    port = free_port()
    command = under_ulimit(1024, 1024, "--config", str(path), "--web.config.file", str(web),
                           "--web.listen-address", f"127.0.0.1:{port}",
                           "--web.read-header-timeout", "3s")  # fmt: skip
    with log.open("w") as output:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=output, stderr=subprocess.STDOUT
        )
    stop, opened = asyncio.Event(), [0]
    attackers: list[asyncio.Task[None]] = []
    probes: list[float] = []
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()
    }
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            # Ready, not just alive: the first run must have published what the scrape checks
            # (on a loaded machine it finished after the scrape).
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            attackers = [asyncio.create_task(_trickle(port, stop, opened)) for _ in range(1100)]
            deadline = time.monotonic() + 8
            scraped = ""
            while time.monotonic() < deadline:
                began = time.monotonic()
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200
                probes.append(time.monotonic() - began)
                if not scraped and time.monotonic() > deadline - 4:
                    async with session.get(f"http://127.0.0.1:{port}/metrics",
                                           headers=auth) as response:  # fmt: skip
                        assert response.status == 200
                        scraped = await response.text()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        process.terminate()
        await process.wait()
    samples = parse_samples(scraped)
    assert samples[key("probe_one", tenant="acme")] == 1
    assert samples[key("cockpit_exporter_http_connections_max")] == 512
    assert samples[key("cockpit_exporter_http_connections")] <= 512
    closed = sum(samples[key("cockpit_exporter_http_connections_closed_total", reason=r)]
                 for r in ("limit", "evicted", "header_timeout"))  # fmt: skip
    assert closed >= 500, samples
    assert opened[0] >= 1100
    assert len(probes) > 20
    assert log.stat().st_size < 1_000_000, log.stat().st_size
    print(f"{len(probes)} probes, slowest {max(probes):.3f} s; {opened[0]} attacker connections")
