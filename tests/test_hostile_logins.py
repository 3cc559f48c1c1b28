"""Password guessing at scale: a correct login is not starved by a flood of wrong guesses, a
refusal takes as long whoever was named, and refusals cannot flood the log. Real bcrypt,
real HTTP from many loopback addresses, the real exporter."""

import asyncio
import base64
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import bcrypt

from exporter.auth import Authenticator, _dummy_hash, cost_of, decode_basic
from exporter.hashing import HashQueue
from exporter.webconfig import WebConfig
from tests.conftest import free_port, write
from tests.helpers import eventually, wait_http
from tests.test_hostile_clients import sqlite_config


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def hashed(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


async def test_a_correct_login_is_answered_before_the_backlog_of_guesses(
    make_exporter, tmp_path: Path
) -> None:
    """500 wrong guesses from 50 addresses queue up for the bcrypt thread; a correct login
    sent after them is answered after the check in progress and a few more (the cleanest and
    newest caller first), not after every guess queued before it."""
    web = WebConfig.model_validate({"basic_auth_users": {"ops": hashed("right", 7)}})
    exporter = await make_exporter(sqlite_config(tmp_path), web_config=web)
    url = exporter.url + "/metrics"
    done: list[str] = []

    async def guess(session: aiohttp.ClientSession, n: int) -> None:
        async with session.get(url, headers=basic("ops", f"wrong-{n}")) as response:
            assert response.status == 401
        done.append("guess")

    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{a}", 0)))
        for a in range(2, 52)
    ]
    try:
        flood = [asyncio.create_task(guess(s, n)) for s in sessions for n in range(10)]
        await eventually(lambda: len(done) >= 20)  # under way, hundreds of guesses queued
        sent_after = len(done)
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.99", 0))
            ) as session,
            session.get(url, headers=basic("ops", "right")) as response,
        ):
            assert response.status == 200
        answered_after = len(done)
        await asyncio.gather(*flood)
    finally:
        for session in sessions:
            await session.close()
    assert len(done) == 500
    waited_for = answered_after - sent_after
    print(f"the login waited for {waited_for} guesses ({sent_after} done when it was sent)")
    # First come, first served, it waited for about a hundred (every one queued before it).
    assert waited_for < 30, f"the login waited for {waited_for} guesses"


async def test_a_refusal_takes_as_long_whoever_was_named() -> None:
    """With users at cost 8 and 10: an unknown user is checked against a cost-10 hash, and a
    wrong password for the cost-8 user waits until it has taken as long as a cost-10 check
    (a sleep, not more hashing); the right password is not padded."""
    auth = Authenticator(WebConfig.model_validate({"basic_auth_users": {
        "cheap": hashed("right", 8), "dear": hashed("right", 10),
    }}))  # fmt: skip
    assert cost_of(_dummy_hash(10)) == 10
    queue = HashQueue()

    async def timed(user: str, password: str) -> float:
        began = time.perf_counter()
        await auth.authenticate(basic(user, password)["Authorization"], lambda c: queue.run(0, c))
        return time.perf_counter() - began

    dear = statistics.median([await timed("dear", f"w{i}") for i in range(5)])
    unknown = statistics.median([await timed("nobody", f"w{i}") for i in range(5)])
    cheap = statistics.median([await timed("cheap", f"w{i}") for i in range(5)])
    # Medians of whole refusals, not the last check's own time: one slow check on a loaded
    # machine must not decide the comparison. A padded refusal is padded by the last checks'
    # times, which the parallel suite moves by a third (84 of 122 ms seen); unpadded, a
    # cheap refusal would take a quarter, an unknown user's almost nothing.
    check_dear = min(dear, auth._took[10])
    assert min(unknown, cheap) >= 0.6 * check_dear
    # A success is not padded: it takes the cheap check's own time, a quarter of the dear
    # one's. The fastest of three, as one check can be preempted on a loaded machine (a
    # single cost-8 check once took 70% of the cost-10 median under the parallel suite).
    right = min([await timed("cheap", "right") for _ in range(3)])
    assert right < 0.5 * check_dear
    decoded = decode_basic(basic("cheap", "right")["Authorization"].split()[1])
    assert decoded is not None and auth.check_basic(decoded)


async def test_five_thousand_malformed_credentials_write_a_few_lines(tmp_path: Path) -> None:
    """`Authorization: Basic !!` 5,000 times (refused, then blocked): all answered 401 or
    429, and the log gets at most one line a second per kind of event, each saying how many
    it left out."""
    web = write(tmp_path / "web.yaml", f"basic_auth_users: {{ops: '{hashed('pw', 4)}'}}\n")
    path = write(tmp_path / "c.yaml", sqlite_config(tmp_path))
    log = tmp_path / "exporter.log"
    port = free_port()
    with log.open("w") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", "--config", str(path), "--web.config.file",
            str(web), "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "logfmt",
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    statuses: list[int] = []
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        began = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as session:
            for _ in range(50):
                batch = [
                    session.get(
                        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Basic !!"}
                    )
                    for _ in range(100)
                ]
                for response in await asyncio.gather(*batch):
                    statuses.append(response.status)
                    response.release()
                # Spread over more than a second: what a second leaves out is carried by the
                # next second's lines, and a faster server answered all 5,000 within one.
                await asyncio.sleep(0.03)
        seconds = time.monotonic() - began
    finally:
        process.terminate()
        await process.wait()
    assert len(statuses) == 5000 and set(statuses) <= {401, 429}
    lines = [line for line in log.read_text().splitlines() if "exporter started" not in line]
    refusals = [line for line in lines if 'msg="authentication failed"' in line]
    assert refusals and all("reason=malformed" in line for line in refusals)
    # One line a second per event kind (refusal, block, 401 and 429 request lines), plus a
    # handful at start and stop: far under 50 for a spray of a few seconds.
    assert len(lines) < 50 and len(lines) <= 4 * (seconds + 2) + 10, len(lines)
    # Every request is told: a line of its own, or counted by the next line of its status,
    # or (the last second's) by the report at shutdown.
    requests = [line for line in lines if 'msg="http request"' in line]
    reports = [line for line in lines if 'msg="log lines left out"' in line
               and 'lines="http request"' in line]  # fmt: skip
    told = len(requests) + sum(_suppressed(line) for line in requests + reports)
    assert told == 5000 and reports, "\n".join(lines)


def _suppressed(line: str) -> int:
    """The `suppressed=N` of a logfmt line, 0 if it has none."""
    for part in line.split():
        if part.startswith("suppressed="):
            return int(part.split("=")[1])
    return 0
