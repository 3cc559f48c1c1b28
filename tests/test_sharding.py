"""Sharding: rendezvous hashing of tenants over replicas, the shard flags and re-sharding."""

import random
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from exporter.sharding import Shard, ShardError, owner, resolve
from tests.conftest import ScratchDatabase, key, write

TENANTS = sorted(
    {
        "".join(random.Random(i).choices(string.ascii_lowercase + string.digits, k=8))
        for i in range(2000)
    }
)


@pytest.mark.parametrize("total", range(1, 9))
def test_every_tenant_is_collected_by_exactly_one_shard(total: int) -> None:
    """Over shards 0..N-1 each tenant is owned exactly once, and no shard is left idle or
    takes far more than its share."""
    owners = Counter()
    for tenant in TENANTS:
        holders = [i for i in range(total) if Shard(i, total).owns(tenant)]
        assert len(holders) == 1, (tenant, holders)
        owners[holders[0]] += 1
    share = len(TENANTS) / total
    assert set(owners) == set(range(total))
    assert all(0.8 * share < n < 1.2 * share for n in owners.values()), owners


def test_adding_a_shard_moves_only_what_the_new_one_takes() -> None:
    """4 -> 5 shards: at most 30% of tenants move (about a fifth), and each moves to the new
    shard; none moves between the old ones."""
    moved = [t for t in TENANTS if owner(t, 4) != owner(t, 5)]
    assert len(moved) <= 0.3 * len(TENANTS)
    assert 0.15 * len(TENANTS) < len(moved)
    assert {owner(t, 5) for t in moved} == {4}


@pytest.mark.parametrize(
    ("shard", "total", "hostname", "expected"),
    [
        ("2", 3, None, Shard(2, 3)),
        ("auto", 4, "cockpit-exporter-3", Shard(3, 4)),
        ("auto", 12, "cockpit-exporter-11", Shard(11, 12)),
        ("auto", 4, "cockpit-exporter", "does not end in -NUMBER"),
        ("auto", 4, "cockpit-exporter-4", "shards are 0 to 3"),
        ("3", 3, None, "shards are 0 to 2"),
        ("-1", 3, None, "a number from 0, or auto"),
        ("one", 3, None, "a number from 0, or auto"),
        ("0", 0, None, "at least 1"),
    ],
)
def test_resolving_the_shard(shard: str, total: int, hostname: str | None, expected) -> None:
    """--shard N, or auto from a StatefulSet pod name; anything else names the problem."""
    if isinstance(expected, Shard):
        assert resolve(shard, total, hostname) == expected
    else:
        with pytest.raises(ShardError, match=expected):
            resolve(shard, total, hostname)


def test_a_bad_shard_stops_the_exporter_before_it_starts(tmp_path: Path) -> None:
    """Exit 2 with the reason; from flags and from the environment alike."""
    config = write(tmp_path / "c.yaml", "tenants: []\n")
    flags = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(config), "--shard", "3",
         "--total-shards", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert flags.returncode == 2 and "shards are 0 to 2" in flags.stderr, flags.stderr
    env = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"COCKPIT_SHARD": "auto", "COCKPIT_TOTAL_SHARDS": "2", "PATH": "/usr/bin",
             "HOSTNAME": "x"},
    )  # fmt: skip
    assert env.returncode == 2 and "--shard auto: hostname" in env.stderr, env.stderr


def fleet(database: ScratchDatabase, count: int) -> str:
    tenants = "\n".join(
        f"  - {{id: t{i:03d}, mysql: {{dsn: '{database.dsn}'}}}}" for i in range(count)
    )
    return (
        f"tenants:\n{tenants}\nqueries:\n  - name: one\n    sql: SELECT 1 AS v\n"
        "    metrics: [{name: cockpit_one, type: gauge, help: One., value: v}]\n"
    )


async def test_a_shard_collects_its_tenants_and_reshards_on_reload(
    make_exporter, database: ScratchDatabase, tmp_path: Path
) -> None:
    """Shard 1 of 3 runs jobs for its tenants only, says so in its self-metrics, and a
    reload that adds tenants takes on the new ones it owns, without a restart."""
    path = write(tmp_path / "config.yaml", fleet(database, 30))
    exporter = await make_exporter(path.read_text(), config=path, shard="1", total_shards=3)
    mine = {f"t{i:03d}" for i in range(30) if owner(f"t{i:03d}", 3) == 1}
    assert {j.tenant for j in exporter.exporter.runner.jobs()} == mine
    await exporter.run_all()
    samples = await exporter.samples()
    assert {
        dict(labels)["tenant"] for (n, labels), _ in samples.items() if n == "cockpit_one"
    } == mine
    assert samples[key("cockpit_exporter_shard_info", shard="1", total="3")] == 1
    assert samples[key("cockpit_exporter_shard_tenants")] == len(mine)
    landing = await exporter.scrape("/")
    assert f"1 of 3 ({len(mine)} tenants)" in landing

    write(path, fleet(database, 60))
    assert await exporter.exporter.reload() == []
    mine = {f"t{i:03d}" for i in range(60) if owner(f"t{i:03d}", 3) == 1}
    assert {j.tenant for j in exporter.exporter.runner.jobs()} == mine
    assert (await exporter.samples())[key("cockpit_exporter_shard_tenants")] == len(mine)
