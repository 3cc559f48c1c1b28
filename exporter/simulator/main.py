"""`cockpit-exporter simulate`: serve N simulated tenants, optionally writing a matching config."""

import asyncio
import signal
from collections.abc import Mapping
from pathlib import Path

import structlog
import yaml
from aiohttp import web

from exporter.simulator.server import Simulator

log = structlog.get_logger(__name__)


def tenant_ids(count: int) -> list[str]:
    """Ids of `count` simulated tenants."""
    return [f"t{i:04d}" for i in range(1, count + 1)]


def platform_blocks(
    simulator: Simulator, url: str, secrets_dir: Path
) -> dict[str, dict[str, object]]:
    """Each tenant's `platform` config block; secrets are written to files, not into YAML."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    blocks: dict[str, dict[str, object]] = {}
    for tenant in simulator.tenants.values():
        secret = secrets_dir / f"{tenant.id}.secret"
        secret.write_text(tenant.client_secret + "\n", encoding="utf-8")
        secret.chmod(0o600)
        blocks[tenant.id] = {
            "base_url": f"{url}/t/{tenant.id}",
            "token_url": f"{url}/oauth/token",
            "client_id": tenant.client_id,
            "client_secret_file": str(secret),
        }
    return blocks


def write_config(simulator: Simulator, url: str, path: Path, interval: str = "30s") -> None:
    """An exporter config polling every simulated tenant, secrets beside it."""
    blocks = platform_blocks(simulator, url, path.parent / f"{path.stem}-secrets")
    tenants = [{"id": tid, "platform": block} for tid, block in blocks.items()]
    document = {"defaults": {"interval": interval, "timeout": "20s"}, "tenants": tenants}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


async def start_simulator(simulator: Simulator, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the simulator; returns its runner and base URL."""
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, f"http://{host}:{_bound_port(site)}"


async def run_simulator(
    *,
    tenants: int,
    seed: int,
    host: str,
    port: int,
    speed: float,
    warm_up: float,
    config: Path | None,
    client_secrets: Mapping[str, str] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT."""
    simulator = Simulator(
        tenant_ids(tenants), seed, speed, warm_up=warm_up, client_secrets=client_secrets
    )
    runner, url = await start_simulator(simulator, host, port)
    if config is not None:
        write_config(simulator, url, config)
    log.info("simulator running", url=url, tenants=tenants, seed=seed, config=str(config or ""))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def _bound_port(site: web.TCPSite) -> int:
    """The port a site listens on (what port 0 became)."""
    # aiohttp exposes the bound socket only on the underlying server object.
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0
