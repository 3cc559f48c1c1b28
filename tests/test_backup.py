"""State backups taken while the exporter runs, and restores that continue counts exactly."""

import asyncio
import gzip
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL, make_url

from exporter.backup import ArchiveError, backup, read, restore
from exporter.state import FileStore, StateError, encode
from exporter.state_mysql import MysqlStore
from tests.test_reliability import counted, happened, poll


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_yesterdays_backup_restored_into_a_fresh_exporter_counts_exactly(
    manual_sim, make_exporter, tmp_path: Path
) -> None:
    """A backup taken while polling; the platform runs on and the exporter with it; a fresh
    state directory restored from the backup: counters continue from the backup, and every
    run finished since (before and after the backup's moment) is counted exactly once."""
    state = tmp_path / "state"
    config = manual_sim.config(tmp_path, page_size=3, overlap="5m")
    first = await make_exporter(config, state_dir=state)
    before = manual_sim.finished("t0001")
    for _ in range(3):
        await poll(first)
        manual_sim.clock.now += 60
    archive = tmp_path / "state.backup"
    code, output = await cli("state", "backup", str(archive), "--state.dir", str(state))
    assert code == 0, output
    at_backup = counted(await first.samples())
    for _ in range(3):  # "yesterday": the platform and the first exporter went on
        manual_sim.clock.now += 600
        await poll(first)
    await first.exporter.stop()

    fresh = tmp_path / "fresh"
    code, output = await cli("state", "restore", str(archive), "--state.dir", str(fresh))
    assert code == 0 and "restored" in output, output
    second = await make_exporter(config, state_dir=fresh)
    await poll(second)
    restored = counted(await second.samples())
    assert all(restored.get(k, 0) >= n for k, n in at_backup.items())
    assert restored == happened(manual_sim, before)


async def test_restore_refuses_a_running_exporter_and_a_corrupt_or_foreign_archive(
    manual_sim, make_exporter, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    running = await make_exporter(manual_sim.config(tmp_path), state_dir=state)
    await poll(running)
    archive = tmp_path / "a.backup"
    assert await backup(FileStore(state), archive, "0/1") > 0
    # Into the running exporter's directory: refused, nothing written.
    with pytest.raises(StateError, match="an exporter is running on it"):
        await restore(read(archive, "0/1"), FileStore(state))
    code, output = await cli("state", "restore", str(archive), "--state.dir", str(state))
    assert code == 2 and "an exporter is running on it" in output
    # A backup never overwrites a file, nor writes through a link.
    code, output = await cli("state", "backup", str(archive), "--state.dir", str(state))
    assert code == 2 and "exists" in output
    # Another shard's archive, or one changed after it was written: refused, naming why.
    with pytest.raises(ArchiveError, match="taken on shard '0/1', this exporter is shard '1/2'"):
        read(archive, "1/2")
    document = json.loads(gzip.decompress(archive.read_bytes()))
    key = next(iter(document["records"]))
    document["records"][key] = document["records"][key].replace('"cursor"', '"cursoR"')
    tampered = tmp_path / "t.backup"
    tampered.write_bytes(gzip.compress(json.dumps(document).encode()))
    code, output = await cli("state", "restore", str(tampered), "--state.dir", str(tmp_path / "x"))
    assert code == 2 and "checksum mismatch" in output
    tampered.write_bytes(b"not gzip")
    with pytest.raises(ArchiveError, match="cannot read"):
        read(tampered, "0/1")
    # A directory being restored cannot be started on.
    empty = FileStore(tmp_path / "restoring")
    empty.hold(exclusive=True)
    with pytest.raises(StateError, match="a restore is under way"):
        FileStore(tmp_path / "restoring").hold()
    empty.release()


async def test_backup_and_restore_through_the_mysql_table(make_database, tmp_path: Path) -> None:
    """A MySQL state table backs up, restores into an empty table only; a record that is not
    one (bad checksum) makes the archive refused at restore, naming the record."""
    source_db, target_db = make_database(), make_database()
    store, target = MysqlStore(_url(source_db.name)), MysqlStore(_url(target_db.name))
    try:
        await store.save("t/platform/poll", encode({"cursor": "x"}))
        archive = tmp_path / "m.backup"
        assert await backup(store, archive, "0/1") == 1
        assert await restore(read(archive, "0/1"), target) == 1
        assert await target.load("t/platform/poll") == await store.load("t/platform/poll")
        with pytest.raises(ArchiveError, match="not empty"):
            await restore(read(archive, "0/1"), target)
        await store.save("t/platform/other", b'{"version": 1, "payload": {}, "sha256": "0"}')
        broken = tmp_path / "b.backup"
        await backup(store, broken, "0/1")
        with pytest.raises(ArchiveError, match="record 't/platform/other': checksum mismatch"):
            read(broken, "0/1")
    finally:
        await store.close()
        await target.close()


def _url(database: str) -> URL:
    return make_url(f"mysql+aiomysql://root@127.0.0.1:3306/{database}")
