"""Start the platform simulator in the test's event loop and write exporter configs for it."""

from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from exporter.simulator.main import platform_blocks, start_simulator, tenant_ids
from exporter.simulator.server import Simulator


class ManualClock:
    """Platform time that moves only when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RunningSimulator:
    """A simulator served over real HTTP on a free loopback port."""

    def __init__(self, simulator: Simulator, runner: web.AppRunner, url: str) -> None:
        self.simulator, self.runner, self.url = simulator, runner, url

    def tenant(self, tenant_id: str) -> Any:
        return self.simulator.tenants[tenant_id]

    def finished(self, tenant_id: str) -> dict[tuple[str, str], int]:
        """The simulator's own count of finished runs by (process id, status)."""
        world = self.simulator.world(self.tenant(tenant_id))
        return dict(world.finished)

    def config(self, directory: Path, **platform: Any) -> str:
        """Exporter YAML polling every simulated tenant; `platform` overrides block keys."""
        blocks = platform_blocks(self.simulator, self.url, directory / "secrets")
        tenants = [{"id": t, "platform": b | platform} for t, b in blocks.items()]
        return yaml.safe_dump({"tenants": tenants})


async def start(count: int = 2, seed: int = 7, **options: Any) -> RunningSimulator:
    simulator = Simulator(tenant_ids(count), seed, **options)
    runner, url = await start_simulator(simulator, "127.0.0.1", 0)
    return RunningSimulator(simulator, runner, url)
