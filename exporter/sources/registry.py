"""Every source kind, one line each: what builds its Source and its jobs (keys: sections.py)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.errors import REASONS
from exporter.sources.base import Job, Resources, Source
from exporter.sources.deferred import Deferred
from exporter.sources.http_json import config as http_json_config
from exporter.sources.http_json import source as http_json
from exporter.sources.platform import source as platform
from exporter.sources.sql import kind as sql

if TYPE_CHECKING:
    from exporter.config import Config


@dataclass(frozen=True)
class Kind:
    """A source kind as the exporter wires it."""

    make: Callable[[Resources], Source]
    jobs: Callable[["Config"], list[Job]]


def _from_section(kind: str) -> Callable[["Config"], list[Job]]:
    return lambda config: [job for job in config.section_jobs if job.kind == kind]


def _sql_source(resources: Resources) -> Source:
    # SQLAlchemy, PyMySQL and the pipeline: 17 MB a platform-only exporter never loads.
    from exporter.sources.sql.source import SqlSource  # noqa: PLC0415

    return SqlSource(resources)


def _deferred_sql(resources: Resources) -> Source:
    return Deferred(resources, _sql_source, kind=sql.KIND, reasons=REASONS,
                    crash_reason=sql.CRASH_REASON, skips_rows=True)  # fmt: skip


KINDS: dict[str, Kind] = {
    sql.KIND: Kind(_deferred_sql, sql.jobs),
    platform.KIND: Kind(platform.PlatformSource, platform.jobs),
    http_json_config.KIND: Kind(http_json.HttpJsonSource, _from_section(http_json_config.KIND)),
}


def all_jobs(config: "Config") -> list[Job]:
    """Every job of every source kind the config asks for."""
    return [job for kind in KINDS.values() for job in kind.jobs(config)]


def make_sources(resources: Resources) -> dict[str, Source]:
    """One Source per kind, sharing the process's resources."""
    return {name: kind.make(resources) for name, kind in KINDS.items()}
