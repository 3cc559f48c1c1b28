"""The process's own process_* and python_* metrics, from prometheus-client's collectors.

They change on every scrape, so they are rendered per scrape and appended to the cached
snapshot output, never mixed into it.
"""

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter.exposition import OPENMETRICS_EOF
from exporter.listener import Guard, GuardCollector


class RuntimeMetrics:
    """CPU, memory, file descriptors, GC, Python version and HTTP connections of the process."""

    def __init__(self, guard: Guard | None = None) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)
        if guard is not None:
            self._registry.register(GuardCollector(guard))

    def render(self, openmetrics: bool) -> bytes:
        """The families in the requested format, without OpenMetrics' final EOF."""
        if openmetrics:
            text: bytes = openmetrics_latest(self._registry)  # type: ignore[no-untyped-call]
            return text.removesuffix(OPENMETRICS_EOF)
        return generate_latest(self._registry)
