"""The database servers in use: one Server (and, for MySQL, its Pipeline) per target."""

import asyncio

from exporter.config import DatabaseSpec
from exporter.sources.sql.engines import SWEEP_EVERY, Server, make_engine
from exporter.sources.sql.pipeline import MAX_BATCH, Pipeline
from exporter.sources.sql.slots import Slots


class Servers:
    """One Server per connection target (server and credentials), created on first use."""

    def __init__(self) -> None:
        self._servers: dict[str, Server] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def get(self, spec: DatabaseSpec) -> tuple[Server, Pipeline | None]:
        """The shared server for `spec` and, for MySQL, its pipeline; created on first use."""
        key = spec.pool_key
        server = self._servers.get(key)
        if server is None:
            server = Server(make_engine(spec), spec.max_connections, spec.idle_timeout, spec.server)
            self._servers[key] = server
            if server.is_mysql:
                # Runs in flight: each connection carries a batch of them at a time.
                server.slots = Slots(server.cap * MAX_BATCH)
                self._pipelines[key] = Pipeline(server)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return server, self._pipelines.get(key)

    @property
    def servers(self) -> list[Server]:
        """The servers in use."""
        return list(self._servers.values())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            for server in list(self._servers.values()):
                server.sweep()

    async def retain(self, keys: set[str]) -> None:
        """Close the servers no job uses any more (after a reload)."""
        for key in [k for k in self._servers if k not in keys]:
            await self._close(key)

    async def _close(self, key: str) -> None:
        pipeline = self._pipelines.pop(key, None)
        if pipeline is not None:
            await pipeline.close()
        await self._servers.pop(key).close()

    async def close(self) -> None:
        """Close every server's connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for key in list(self._servers):
            await self._close(key)
