"""What every source kind is: the Job it schedules, the Parts a run yields, the Source protocol."""

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from exporter.errors import CollectionError
from exporter.exposition import Family
from exporter.state import State
from exporter.store import SnapshotKey


@dataclass(frozen=True)
class Job:
    """One scheduled collection; `id` keys the scheduler, readiness and reload diffs alike.

    `spec` is the source kind's own settings (a frozen dataclass), so two jobs are equal
    exactly when nothing about them changed.
    """

    tenant: str
    kind: str
    name: str
    interval: float
    timeout: float
    spec: Any
    target: str = ""  # where it collects from, safe to show (no password)
    stale: float | None = None  # the configured `stale_after`
    cron: str | None = None  # a crontab schedule instead of every `interval`

    @property
    def stale_after(self) -> float:
        """How long a success's gauges stay served: as configured, else two intervals."""
        return self.stale if self.stale is not None else 2 * self.interval

    @cached_property
    def id(self) -> str:
        """`tenant/kind/name`: unique across all sources."""
        return f"{self.tenant}/{self.kind}/{self.name}"

    def key(self, part: str) -> SnapshotKey:
        """The snapshot key of one part of this job's output."""
        return (self.tenant, self.kind, part)


@dataclass
class Part:
    """One named outcome of a run (the `query` label): its series, or why it failed.

    On failure `bodies` are series still true without this run (counters so far); an
    untracked part is a plain snapshot without self-metrics (e.g. client counters).
    """

    name: str
    bodies: dict[str, bytes] = field(default_factory=dict)
    series: int = 0
    error: CollectionError | None = None
    duration: float | None = None
    nulls: int = 0
    duplicates: int = 0
    dropped: int = 0
    invalid: int = 0
    tracked: bool = True


@dataclass
class Rendered:
    """Sample lines per family from one run's data, plus what was skipped on the way."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    series: int = 0
    nulls: int = 0
    duplicates: int = 0
    dropped: int = 0
    invalid: int = 0  # samples dropped as impossible (a negative counter)

    def part(self, name: str) -> Part:
        """The run's outcome as the runner publishes it."""
        bodies = {family: "".join(lines).encode() for family, lines in self.lines.items()}
        return Part(
            name, bodies, self.series,
            nulls=self.nulls, duplicates=self.duplicates, dropped=self.dropped,
            invalid=self.invalid,
        )  # fmt: skip


@dataclass(frozen=True)
class Resources:
    """What the process shares with every source."""

    http: Callable[[], aiohttp.ClientSession]  # the process-wide session, made on first use
    max_concurrent_queries: int
    state: State = field(default_factory=lambda: State(None))


class Source(Protocol):
    """A kind of source: how its jobs are prepared, collected and released."""

    kind: str
    reasons: tuple[str, ...]  # error reasons its self-metrics count
    crash_reason: str  # the reason an unexpected exception in collect counts as
    skips_rows: bool  # whether runs count skipped rows (nulls, duplicates, dropped series)

    def families(self, jobs: Sequence[Job]) -> Iterable[Family]:
        """The metric families these jobs export (the registry refuses a second owner)."""
        ...

    def parts(self, job: Job) -> tuple[str, ...]:
        """Names of the tracked parts a run of `job` yields."""
        ...

    def open(self, job: Job) -> None:
        """Prepare `job` (new, or changed: keep what should survive, e.g. run counts)."""
        ...

    def close(self, job: Job) -> None:
        """Release what `open` prepared; the job is gone."""
        ...

    def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Run `job` once, yielding each part as soon as it is known."""
        ...

    async def retain(self, jobs: Sequence[Job]) -> None:
        """After a reload: `jobs` are all this kind has now; free anything else."""
        ...

    async def aclose(self) -> None:
        """At shutdown: close connections."""
        ...


class OnePart:
    """An async iterator of the one part a coroutine makes (for sources with one part).

    Not an async generator: asyncio registers every async generator it starts in a WeakSet
    (for shutdown), which cost a SQL run more than its bookkeeping (docs/performance.md).
    """

    def __init__(self, making: Coroutine[Any, Any, "Part"]) -> None:
        self._making: Coroutine[Any, Any, Part] | None = making

    def __aiter__(self) -> "OnePart":
        return self

    async def __anext__(self) -> "Part":
        making, self._making = self._making, None
        if making is None:
            raise StopAsyncIteration
        return await making


def safe_url(url: str) -> str:
    """A URL to show: any user and password in it removed."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
