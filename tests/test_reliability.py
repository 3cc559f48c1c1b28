"""Nothing lost: run counts survive restarts (and SIGKILL at any moment), partial progress under
rate limits is kept, and state faults cost only the job they hit. Real simulator over HTTP,
platform time moved by hand."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.state import FileStore, State, StateError, decode, encode, encode_entries
from exporter.state_mysql import MysqlStore
from tests import platform_helpers
from tests.conftest import admin, free_port, parse_samples

FINISHED = "cockpit_runs_finished_total"
RUNS_POLLED = (
    "cockpit_collection_runs_total",
    frozenset({("tenant", "t0001"), ("source", "platform"), ("query", "runs")}),
)


def state_errors(operation: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {("tenant", "t0001"), ("source", "platform"), ("operation", operation)}
    return ("cockpit_exporter_state_errors_total", frozenset(labels))


def counted(samples: dict, tenant: str = "t0001") -> dict[tuple[str, str], float]:
    """Finished runs per (process, status) as the exporter exports them."""
    return {
        (dict(labels)["process_id"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == FINISHED and dict(labels)["tenant"] == tenant and value
    }


def happened(manual_sim: platform_helpers.RunningSimulator, before: dict) -> dict:
    """Runs the simulator finished since `before`."""
    after = manual_sim.finished("t0001")
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


async def poll(exporter) -> None:
    await exporter.exporter.run_job(exporter.job("t0001", "poll", "platform"))


async def test_counts_continue_across_a_restart(manual_sim, make_exporter, tmp_path: Path) -> None:
    """3 polls, stop, runs finish while down, start again with the same state: counters go
    on from their values and every run is counted exactly once."""
    state = tmp_path / "state"
    config = manual_sim.config(tmp_path, page_size=3, overlap="5m")
    first = await make_exporter(config, state_dir=state)
    before = manual_sim.finished("t0001")
    await poll(first)
    for _ in range(3):
        manual_sim.clock.now += 60
        await poll(first)
    seen_before_stop = counted(await first.samples())
    await first.exporter.stop()
    manual_sim.clock.now += 600  # runs finish while the exporter is down
    second = await make_exporter(config, state_dir=state)
    samples = await second.samples()
    assert counted(samples) == {}  # nothing published before the first poll: no reset seen
    await poll(second)
    restarted = counted(await second.samples())
    assert all(restarted.get(k, 0) >= n for k, n in seen_before_stop.items())
    assert restarted == happened(manual_sim, before)


async def test_corrupt_state_starts_that_tenant_from_scratch(
    manual_sim, make_exporter, tmp_path: Path
) -> None:
    """A damaged state file is counted as a read error and the tenant starts from its
    baseline; the file is replaced by a good one after the next poll."""
    state = tmp_path / "state"
    state.mkdir()
    record = state / "t0001%2Fplatform%2Fpoll.json"
    record.write_text('{"version": 1, "sha256": "00", "payload": {"runs": {}}}')
    exporter = await make_exporter(manual_sim.config(tmp_path), state_dir=state)
    await poll(exporter)
    samples = await exporter.samples()
    errors = state_errors("read")
    assert samples[errors] == 1
    assert counted(samples) == {}  # baseline: history is not news
    assert decode(record.read_bytes())["runs"]["baselined"] is True


def test_a_record_built_entry_by_entry_is_the_record_encode_makes() -> None:
    """The common health record is encoded entry by entry: it decodes to what `encode` would
    have written, with the same checksum, for keys and values that JSON escapes; entries out of
    order do not make a record a reader accepts."""
    entries = {
        f'job "{n}"/é\n': {"parts": {"p": {"success": n % 2 == 0, "last_success": n / 7}}}
        for n in range(30)
    }
    payload = {"at": 1.5, "z": None, "jobs": entries}
    whole, pieces = encode(payload), encode_entries({"z": None, "at": 1.5}, "jobs",
                                                    sorted(entries.items()))  # fmt: skip
    assert decode(pieces) == decode(whole) == payload
    assert json.loads(pieces)["sha256"] == json.loads(whole)["sha256"]
    assert decode(encode_entries({}, "jobs", [])) == {"jobs": {}}
    with pytest.raises(StateError, match="checksum"):
        decode(encode_entries({"at": 1.5}, "jobs", reversed(sorted(entries.items()))))


async def test_unwritable_state_keeps_collecting(manual_sim, make_exporter, tmp_path: Path) -> None:
    """A state location that cannot be written (here a file where the directory should be,
    as a full or read-only disk would) is counted; collection goes on."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("x")
    exporter = await make_exporter(manual_sim.config(tmp_path), state_dir=blocked)
    await poll(exporter)
    manual_sim.clock.now += 60
    await poll(exporter)
    samples = await exporter.samples()
    errors = state_errors("write")
    assert samples[errors] >= 1
    assert exporter.stats("t0001", "platform", "runs").success


async def test_rate_limited_tenant_makes_progress(
    manual_sim, make_exporter, tmp_path: Path
) -> None:
    """Half the requests answered 429 with Retry-After 1 and a deadline that cannot fit every
    page: each poll keeps the pages it got, the cursor moves on, and within a few polls the
    counts equal the platform's. The lag gauge shows the backlog while it lasts."""
    exporter = await make_exporter(manual_sim.config(tmp_path, page_size=10, timeout="4s"))
    before = manual_sim.finished("t0001")
    await poll(exporter)
    manual_sim.clock.now += 1200  # 20 minutes of runs to catch up on, in pages of ten
    tenant = manual_sim.tenant("t0001")
    tenant.faults = tenant.faults.model_copy(update={"rate_limit_rate": 0.5, "retry_after": 1})
    progress, lags = [], []
    for _ in range(20):
        await poll(exporter)
        samples = await exporter.samples()
        progress.append(sum(counted(samples).values()))
        lag = samples.get(("cockpit_platform_runs_lag_seconds", frozenset({("tenant", "t0001")})))
        lags.append(lag)
        if counted(samples) == happened(manual_sim, before):
            break
    assert counted(samples) == happened(manual_sim, before), progress
    # Polls that did not get every page still counted what they got.
    assert any(0 < done < progress[-1] for done in progress), progress
    assert lags[-1] is not None and lags[-1] < 60


def test_state_records_reject_tampering() -> None:
    """Version and checksum are checked; any change to the payload is refused."""
    data = encode({"runs": {"cursor": 1.0}})
    assert decode(data) == {"runs": {"cursor": 1.0}}
    for bad in (b"", b"[]", data.replace(b'"version": 1', b'"version": 2'),
                data.replace(b"1.0", b"2.0"), b"\xff"):  # fmt: skip
        with pytest.raises(StateError):
            decode(bad)


async def test_file_store_is_atomic_and_prunes_old_records(tmp_path: Path) -> None:
    """No temporary file is left; records of removed jobs go after the retention, kept ones
    stay."""
    state = State(FileStore(tmp_path / "s"))
    await state.save("a/platform/poll", {"x": 1})
    await state.save("b/platform/poll", {"x": 2})
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "a%2Fplatform%2Fpoll.json", "b%2Fplatform%2Fpoll.json",
    ]  # fmt: skip
    assert await state.prune(["a/platform/poll"], retention=3600) == []
    old = tmp_path / "s" / "b%2Fplatform%2Fpoll.json"
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert await state.prune(["a/platform/poll"], retention=3600) == ["b/platform/poll"]
    assert await state.load("a/platform/poll") == {"x": 1}
    assert await state.load("b/platform/poll") is None


async def test_mysql_store_on_real_mariadb(make_database) -> None:
    """The table store round-trips records, lists and deletes them."""
    from sqlalchemy import make_url

    db = make_database()
    store = MysqlStore(make_url(f"mysql+aiomysql://root@127.0.0.1:3306/{db.name}"))
    try:
        state = State(store)
        await state.save("a/platform/poll", {"runs": {"cursor": 5.0}})
        await state.save("a/platform/poll", {"runs": {"cursor": 6.0}})
        assert await state.load("a/platform/poll") == {"runs": {"cursor": 6.0}}
        assert list(await store.keys()) == ["a/platform/poll"]
        await store.delete("a/platform/poll")
        assert await state.load("a/platform/poll") is None
    finally:
        await store.close()
    assert admin(f"SELECT COUNT(*) FROM {db.name}.cockpit_exporter_state") == [(0,)]


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_samples(response.read().decode())


def _wait_polled(port: int, process: subprocess.Popen[str], runs_before: float) -> dict:
    """Samples once a runs poll newer than `runs_before` (the runs counter) has landed."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            samples = _scrape(port)
            if samples.get(RUNS_POLLED, 0) > runs_before:
                return samples
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("no poll landed")


async def test_sigkill_at_random_moments_never_double_counts(manual_sim, tmp_path: Path) -> None:
    """The real process, polling every second, killed with SIGKILL at random moments six
    times while platform time moves on; after the last restart the counters equal the runs
    the platform finished, neither fewer nor more."""
    config = tmp_path / "config.yaml"
    config.write_text(manual_sim.config(tmp_path, page_size=2, interval="1s", timeout="1s"))
    state, rng = tmp_path / "state", random.Random(11)
    before = manual_sim.finished("t0001")

    def start() -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config", str(config), "--state.dir",
             str(state), "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        return process, port

    for _ in range(6):
        process, port = start()
        try:
            await asyncio.to_thread(_wait_polled, port, process, 0)
            manual_sim.clock.now += 120  # runs finish; the next polls pick them up
            await asyncio.sleep(rng.uniform(0.0, 2.5))
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=20)
    process, port = start()
    try:
        samples = await asyncio.to_thread(_wait_polled, port, process, 0)
        runs = samples[RUNS_POLLED]
        samples = await asyncio.to_thread(_wait_polled, port, process, runs)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert counted(samples) == happened(manual_sim, before)
