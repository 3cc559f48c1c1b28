"""Scale-out, end to end: 3 exporter shards over the simulator and MariaDB, a Prometheus in
agent mode scraping all three, remote-writing through the rendered per-tenant blocks into
one receiving Prometheus per backend tenant (`--web.enable-remote-write-receiver`)."""

import asyncio
import json
import shutil
import sys
import urllib.parse
from pathlib import Path

import aiohttp
import yaml

from exporter.sharding import owner
from tests import platform_helpers
from tests.conftest import ScratchDatabase, free_port
from tests.helpers import wait_http

SHARDS = 3
TENANTS = 4  # t0001..t0004: owned by shards 2, 1, 1, 0, so every shard has work


async def query(session: aiohttp.ClientSession, port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    async with session.get(url) as response:
        return (await response.json())["data"]["result"]


async def launch(log: Path, *command: str) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:
        return await asyncio.create_subprocess_exec(*command, stdout=sink, stderr=sink)


def config_text(sim: platform_helpers.RunningSimulator, tmp_path: Path, dsn: str) -> str:
    document = yaml.safe_load(sim.config(tmp_path, interval="2s", timeout="2s"))
    for number, tenant in enumerate(document["tenants"], start=1):
        tenant["mysql"] = {"dsn": dsn}
        tenant["params"] = {"tenant_id": number}
    document["queries"] = [{
        "name": "items", "interval": "2s", "timeout": "2s",
        "sql": "SELECT COUNT(*) AS n FROM work_items WHERE tenant_id = :tenant_id",
        "metrics": [{"name": "cockpit_items", "type": "gauge", "help": "Items.", "value": "n"}],
    }]  # fmt: skip
    return yaml.safe_dump(document)


async def test_three_shards_remote_write_each_tenant_once_to_its_own_receiver(
    tmp_path: Path, database: ScratchDatabase
) -> None:
    """Every tenant's series reach its receiver, from its own shard only, exactly once; no
    receiver gets another tenant's series; the exporters' own series go to the operators."""
    assert shutil.which("prometheus"), "`make test` installs Debian's prometheus package"
    database.execute(*(f"INSERT INTO work_items VALUES ({t}, 'q', 'new', 1)" for t in range(1, 5)))
    sim = await platform_helpers.start(TENANTS, seed=3)
    tenants = sorted(sim.simulator.tenants)
    assert {owner(t, SHARDS) for t in tenants} == set(range(SHARDS))
    config = tmp_path / "config.yaml"
    config.write_text(config_text(sim, tmp_path, database.dsn))
    ports = [free_port() for _ in range(SHARDS)]
    receivers = {name: free_port() for name in [*tenants, "cockpit-operators"]}
    children = []
    try:
        for shard, port in enumerate(ports):
            children.append(await launch(
                tmp_path / f"exporter-{shard}.log", sys.executable, "-m", "exporter",
                "--config", str(config), "--shard", str(shard), "--total-shards", str(SHARDS),
                "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning",
                "--state.dir", str(tmp_path / f"state-{shard}"),
            ))  # fmt: skip
        for name, port in receivers.items():
            children.append(await launch(
                tmp_path / f"receiver-{name}.log", "prometheus",
                f"--config.file={write_empty(tmp_path)}", "--web.enable-remote-write-receiver",
                f"--storage.tsdb.path={tmp_path / ('tsdb-' + name)}",
                f"--web.listen-address=127.0.0.1:{port}",
            ))  # fmt: skip
        agent_config = await render_agent(tmp_path, config, ports, receivers)
        agent_port = free_port()
        children.append(await launch(
            tmp_path / "agent.log", "prometheus", "--enable-feature=agent",
            f"--config.file={agent_config}", f"--storage.agent.path={tmp_path / 'wal'}",
            f"--web.listen-address=127.0.0.1:{agent_port}",
        ))  # fmt: skip
        for port in [*ports, *receivers.values(), agent_port]:
            await wait_http(f"http://127.0.0.1:{port}/-/ready" if port not in ports
                            else f"http://127.0.0.1:{port}/healthz", 60)  # fmt: skip
        await check_receivers(tenants, ports, receivers)
    finally:
        # The agent first: stopped after its receivers, it retries their writes for minutes.
        for child in reversed(children):
            if child.returncode is None:
                child.terminate()
                await child.wait()
        await sim.runner.cleanup()


def write_empty(tmp_path: Path) -> Path:
    path = tmp_path / "receiver.yml"
    path.write_text("global: {scrape_interval: 1m}\n")
    return path


async def render_agent(
    tmp_path: Path, config: Path, ports: list[int], receivers: dict[str, int]
) -> Path:
    """`render prometheus --agent` with a tenant header; each block's URL then pointed at
    the receiver standing in for that backend tenant."""
    targets = ",".join(f"127.0.0.1:{p}" for p in ports)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "render", "prometheus", "--config", str(config),
        "--shards", str(SHARDS), "--targets", targets, "--agent", "--scrape-interval", "2s",
        "--remote-write", "http://backend.example/api/v1/push", "--tenant-header",
        "X-Scope-OrgID", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    document = yaml.safe_load(out)
    for block in document["remote_write"]:
        backend = block["headers"]["X-Scope-OrgID"]
        block["url"] = f"http://127.0.0.1:{receivers[backend]}/api/v1/write"
        block["queue_config"] = {"batch_send_deadline": "1s"}
    path = tmp_path / "agent.yml"
    path.write_text(yaml.safe_dump(document))
    return path


async def check_receivers(tenants: list[str], ports: list[int], receivers: dict[str, int]) -> None:
    async with aiohttp.ClientSession() as session:
        seen: dict[str, list[dict]] = {}

        async def arrived() -> bool:
            for tenant in tenants:
                seen[tenant] = await query(session, receivers[tenant], "cockpit_collection_success")
            return all(len(seen[t]) == 5 for t in tenants)  # 4 platform endpoints, 1 SQL query

        deadline = asyncio.get_running_loop().time() + 90
        while not await arrived():
            assert asyncio.get_running_loop().time() < deadline, json.dumps(seen)[:3000]
            await asyncio.sleep(1)
        for tenant in tenants:
            own = f"127.0.0.1:{ports[owner(tenant, SHARDS)]}"
            every = await query(session, receivers[tenant], '{__name__=~"cockpit_.+"}')
            assert {s["metric"].get("tenant") for s in every} == {tenant}, tenant
            assert {s["metric"]["instance"] for s in every} == {own}, tenant
            assert {s["metric"]["shard"] for s in every} == {str(owner(tenant, SHARDS))}
            items = await query(session, receivers[tenant], "cockpit_items")
            assert [s["value"][1] for s in items] == ["1"], items
        operators = await query(
            session, receivers["cockpit-operators"], "cockpit_exporter_shard_info"
        )
        assert sorted(s["metric"]["shard"] for s in operators) == ["0", "1", "2"]
        leaked = await query(session, receivers["cockpit-operators"], '{tenant!=""}')
        assert leaked == [], leaked[:3]
