"""Every source kind, one line each: what builds its Source and what derives its jobs."""

from collections.abc import Callable
from dataclasses import dataclass

from exporter.config import Config
from exporter.sources.base import Job, Resources, Source
from exporter.sources.platform import source as platform
from exporter.sources.sql import source as sql


@dataclass(frozen=True)
class Kind:
    """A source kind as the exporter wires it."""

    make: Callable[[Resources], Source]
    jobs: Callable[[Config], list[Job]]


KINDS: dict[str, Kind] = {
    sql.KIND: Kind(sql.SqlSource, sql.jobs),
    platform.KIND: Kind(platform.PlatformSource, platform.jobs),
}


def all_jobs(config: Config) -> list[Job]:
    """Every job of every source kind the config asks for."""
    return [job for kind in KINDS.values() for job in kind.jobs(config)]


def make_sources(resources: Resources) -> dict[str, Source]:
    """One Source per kind, sharing the process's resources."""
    return {name: kind.make(resources) for name, kind in KINDS.items()}
