"""The real chain: simulator and MariaDB -> exporter -> Prometheus (rules) -> Alertmanager ->
each tenant's webhook. One tenant's agent pool goes offline; only that tenant is paged."""

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from exporter.alertrules import RuleSettings, Thresholds
from exporter.render.alertmanager import render_alertmanager
from exporter.render.rules import render_rules
from exporter.render.yamlout import dump
from tests import platform_helpers
from tests.conftest import ScratchDatabase, free_port
from tests.helpers import exporter_config, spawn, wait_http

TENANTS = ("t0001", "t0002", "t0003")


class Webhooks:
    """Receives Alertmanager's webhook posts, per path."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.received.setdefault(request.match_info["who"], []).append(await request.json())
        return web.Response(text="ok")

    def alerts(self, who: str) -> list[dict[str, Any]]:
        return [a for payload in self.received.get(who, []) for a in payload["alerts"]]


@pytest.fixture
async def webhooks() -> AsyncIterator[tuple[Webhooks, str]]:
    hooks = Webhooks()
    app = web.Application()
    app.router.add_post("/{who}", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hooks, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def named(alerts: list[dict[str, Any]], name: str, status: str = "firing") -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"]["alertname"] == name and a["status"] == status]


async def test_pool_offline_pages_that_tenant_only(
    make_exporter, database: ScratchDatabase, webhooks, tmp_path: Path
) -> None:
    """Agent pool offline for t0001: its receiver gets CockpitAgentPoolOffline naming the tenant,
    pool and agents; no other tenant's receiver (nor the operators) gets anything. Then
    t0001's platform goes down: the operators are paged that t0001 is blind, t0001 is told,
    and the pool page is not resolved by the missing data."""
    assert shutil.which("prometheus") and shutil.which("prometheus-alertmanager")
    hooks, hooks_url = webhooks
    sim = await platform_helpers.start(len(TENANTS))
    processes: list[asyncio.subprocess.Process] = []
    try:
        text = exporter_config(sim, tmp_path, hooks_url, database.dsn)
        exporter = await make_exporter(text, schedule=True)
        config = exporter.exporter.config

        # Alert timings shortened for the test: pages after one evaluation, grouped at once.
        rules = tmp_path / "rules.yml"
        quick = Thresholds(pool_offline_for=1, blind_for=1)
        rules.write_text(dump(render_rules(RuleSettings(thresholds=quick))))
        routing = render_alertmanager(config)
        routing["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        am_config, am_port = tmp_path / "alertmanager.yml", free_port()
        am_config.write_text(dump(routing))
        prom_config, prom_port = tmp_path / "prometheus.yml", free_port()
        prom_config.write_text(
            dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "cockpit",
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{exporter.exporter.port}"]}
                            ],
                        }
                    ],
                }
            )
        )
        processes.append(
            await spawn(
                "prometheus-alertmanager",
                f"--config.file={am_config}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            )
        )
        processes.append(await spawn(
            "prometheus", f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s",
        ))  # fmt: skip
        await wait_http(f"http://127.0.0.1:{am_port}/-/ready")
        await wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        await asyncio.sleep(4)  # scraped and evaluated while everything is healthy

        tenant = sim.tenant("t0001")
        pool = tenant.world.agents[0].pool
        offline = sorted(a.name for a in tenant.world.agents if a.pool == pool)
        tenant.faults = tenant.faults.model_copy(update={"offline_pool": pool})
        for _ in range(600):
            if any(
                a["labels"]["alertname"] == "CockpitAgentPoolOffline" for a in hooks.alerts("t0001")
            ):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # time for anything misrouted to arrive too
        paged_before_outage = {who: list(hooks.alerts(who)) for who in hooks.received}

        tenant.faults = tenant.faults.model_copy(update={"down": True})
        for _ in range(600):
            if named(hooks.alerts("operators"), "CockpitTenantBlind"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(5)  # a resolve of the pool page would have come by now
    finally:
        for process in processes:
            process.terminate()
            await process.wait()
        await sim.runner.cleanup()

    paged = [
        a for a in hooks.alerts("t0001") if a["labels"]["alertname"] == "CockpitAgentPoolOffline"
    ]
    assert paged, json.dumps(hooks.received)[:2000]
    alert = paged[0]
    assert alert["labels"]["tenant"] == "t0001" and alert["labels"]["pool"] == pool
    assert alert["labels"]["severity"] == "critical"
    description = alert["annotations"]["description"]
    assert "t0001" in description and all(name in description for name in offline), description
    # Before the outage: the tenant's business page reached the tenant alone (no other
    # tenant's receiver, nor the operators).
    assert set(paged_before_outage) == {"t0001"}, json.dumps(paged_before_outage)[:2000]
    blind = named(hooks.alerts("operators"), "CockpitTenantBlind")
    assert [a["labels"]["tenant"] for a in blind] == ["t0001"], json.dumps(hooks.received)[:3000]
    assert named(hooks.alerts("t0001"), "CockpitTenantBlind")  # informed: its data is blind
    assert not named(hooks.alerts("t0001"), "CockpitAgentPoolOffline", "resolved")
    # The blind tenant's failing platform jobs page nobody twice: not the operators' warnings.
    assert not named(hooks.alerts("operators"), "CockpitCollectionFailing")
    assert not set(hooks.received) - {"t0001", "operators"}, json.dumps(hooks.received)[:2000]
