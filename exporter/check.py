"""`check-config --connect`: run every job once and say, per tenant, what it would export."""

import asyncio
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import TextIO

import aiohttp

from exporter.config import Config, ConfigError, parse_config, tenant_model
from exporter.discovery import Discovery, TenantEntry, needed_params
from exporter.selfmetrics import JobStats
from exporter.sources.base import Job, Resources
from exporter.sources.http import new_session
from exporter.sources.registry import all_jobs, make_sources
from exporter.sources.runner import Runner
from exporter.store import SnapshotStore

TENANTS_AT_ONCE = 8


async def dry_run(config: Config, out: TextIO = sys.stdout, progress: TextIO = sys.stderr) -> bool:
    """Run each job once through the real sources; print a table; True if all succeeded."""
    config, discovered = await _discover(config, progress)
    if not discovered:
        return False
    session: aiohttp.ClientSession | None = None

    def http() -> aiohttp.ClientSession:
        nonlocal session
        session = session or new_session()
        return session

    sources = make_sources(Resources(http, config.limits.max_concurrent_queries))
    runner = Runner(SnapshotStore(), sources)
    jobs = all_jobs(config)
    await runner.add(jobs)
    try:
        await _run_by_tenant(runner, jobs, progress)
    finally:
        for source in sources.values():
            await source.aclose()
        if session is not None:
            await session.close()
    rows = sorted(runner.stats, key=lambda s: (s.tenant, s.source, s.query))
    out.write(_table(rows))
    return all(s.success for s in rows)


async def _run_by_tenant(runner: Runner, jobs: Sequence[Job], progress: TextIO) -> None:
    by_tenant: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_tenant[job.tenant].append(job)
    slots = asyncio.Semaphore(TENANTS_AT_ONCE)
    done = 0

    async def tenant(tenant_id: str, tenant_jobs: list[Job]) -> None:
        nonlocal done
        async with slots:
            for job in tenant_jobs:
                await runner.run(job.id)
        done += 1
        failed = sum(1 for s in runner.stats if s.tenant == tenant_id and not s.success)
        state = f"{failed} failing" if failed else "ok"
        progress.write(
            f"[{done}/{len(by_tenant)}] {tenant_id}: {len(tenant_jobs)} job(s), {state}\n"
        )

    await asyncio.gather(*(tenant(t, js) for t, js in by_tenant.items()))


def _table(rows: Sequence[JobStats]) -> str:
    header = ("tenant", "source", "query", "result", "series", "error")
    lines = [header] + [
        (s.tenant, s.source, s.query, "ok" if s.success else "FAILED", str(s.series), s.last_error)
        for s in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "".join(
        ("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
         + f"  {line[-1]}").rstrip() + "\n"
        for line in lines
    )  # fmt: skip


async def _discover(config: Config, progress: TextIO) -> tuple[Config, bool]:
    """With tenant_discovery: one registry round, its tenants added; False if it failed."""
    if config.discovery is None or config.discovery_url is None:
        return config, True
    found: list[Config] = []

    async def apply(entries: list[TenantEntry]) -> str | None:
        try:
            found.append(parse_config(config.raw, config.source, entries))
        except ConfigError as exc:
            return "the discovered tenants do not make a valid configuration: " + "; ".join(
                exc.problems[:5]
            )
        return None

    discovery = Discovery(
        spec=config.discovery,
        url=config.discovery_url,
        validate=tenant_model().model_validate,
        needed=needed_params(config.queries),
        apply=apply,
        publish=lambda _: None,
    )
    await discovery.poll()
    await discovery.stop()
    progress.write(f"tenant discovery: {discovery.status()}\n")
    return (found[-1], True) if found else (config, False)
