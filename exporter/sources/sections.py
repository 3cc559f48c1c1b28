"""The tenant keys source kinds own (`tenants[].KEY`) and how each becomes jobs.

Below the config module, which reads them to build its model: the registry of source kinds
sits above the config (it builds Sources from one), so the config cannot ask it.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.exposition import Family
from exporter.schema import ConfigFile
from exporter.sources.base import Job
from exporter.sources.http_json import config as http_json_config
from exporter.sources.http_json import source as http_json


@dataclass(frozen=True)
class Section:
    """A tenant key a source kind owns, and how its values become jobs."""

    key: str
    annotation: Any  # the pydantic type of the value
    jobs: Callable[[str, Any, ConfigFile, str], list[Job]]  # tenant, value, the file, where
    families: Callable[[Sequence[Job]], Iterable[Family]]


_ALL = (
    Section(
        http_json_config.KIND,
        list[http_json_config.Endpoint],
        http_json_config.jobs,
        http_json.families,
    ),
)
# By tenant key: the key is also the kind of the jobs a section makes (the config matches them).
SECTIONS: dict[str, Section] = {section.key: section for section in _ALL}
