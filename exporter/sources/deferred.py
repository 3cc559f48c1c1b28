"""A source kind built on first use: its libraries load only when a job of its kind appears."""

from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from exporter.exposition import Family
from exporter.sources.base import Job, Part, Resources, Source


class Deferred:
    """Stands in for a Source until a job needs it; until then, nothing to prepare or free."""

    def __init__(
        self,
        resources: Resources,
        build: Callable[[Resources], Source],
        *,
        kind: str,
        reasons: tuple[str, ...],
        crash_reason: str,
        skips_rows: bool,
    ) -> None:
        self.kind, self.reasons, self.crash_reason = kind, reasons, crash_reason
        self.skips_rows = skips_rows
        self._resources, self._build = resources, build
        self._source: Source | None = None

    @property
    def built(self) -> Source:
        """The source itself, built now if it was not yet."""
        if self._source is None:
            self._source = self._build(self._resources)
        return self._source

    def families(self, jobs: Sequence[Job]) -> Iterable[Family]:
        """As the source says; no jobs export nothing."""
        return self.built.families(jobs) if jobs else []

    def parts(self, job: Job) -> tuple[str, ...]:
        """As the source says."""
        return self.built.parts(job)

    def open(self, job: Job) -> None:
        """As the source does."""
        self.built.open(job)

    def close(self, job: Job) -> None:
        """As the source does, if it was ever built."""
        if self._source is not None:
            self._source.close(job)

    def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """As the source does."""
        return self.built.collect(job, deadline)

    async def retain(self, jobs: Sequence[Job]) -> None:
        """As the source does; with no jobs and no source there is nothing to free."""
        if jobs or self._source is not None:
            await self.built.retain(jobs)

    async def aclose(self) -> None:
        """As the source does, if it was ever built."""
        if self._source is not None:
            await self._source.aclose()
