"""Pre-rendered snapshots per (tenant, source, query), concatenated into scrape output."""

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.exposition import Family

SnapshotKey = tuple[str, str, str]
# Group of series that belong to no tenant but only operators may read (configuration
# state changes with every tenant's config). '#' cannot start a tenant id.
OPERATORS_GROUP = "#operators"


@dataclass(frozen=True)
class Snapshot:
    """The rendered sample lines of one collection run, by metric family name.

    `tenant` None marks series of the exporter itself: readable by every caller, or, with
    `operators_only`, only by callers that see all tenants.
    """

    tenant: str | None
    bodies: Mapping[str, bytes]
    operators_only: bool = False
    # The same families as OpenMetrics scrapes read them where that differs (exemplars,
    # which the Prometheus text format cannot carry); only for series of the exporter itself.
    openmetrics: Mapping[str, bytes] | None = None

    @property
    def group(self) -> str:
        """Which group of the store's bodies the snapshot belongs to."""
        if self.tenant is not None:
            return self.tenant
        return OPERATORS_GROUP if self.operators_only else ""


@dataclass(frozen=True)
class Exposition:
    """A scrape's bytes as the stored pieces, in order, and their total length.

    Never joined into one buffer: at a thousand tenants the whole is 25 MB, and a copy of it
    per scrape (plus the socket's copies of what it could not send at once) was most of the
    process's peak memory.
    """

    chunks: tuple[bytes, ...]
    size: int
    # What the store held when this was rendered, for caches of what is derived from it
    # (the gzip): equal versions, equal bytes. None for a scrape of chosen tenants.
    version: tuple[int, bool] | None = None

    def join(self) -> bytes:
        """The whole output as one bytes object (for small outputs and tests)."""
        return b"".join(self.chunks)

    def blocks(self, size: int) -> Iterable[bytes]:
        """The output in pieces of about `size` bytes, each joined from consecutive chunks."""
        group: list[bytes] = []
        length = 0
        for chunk in self.chunks:
            group.append(chunk)
            length += len(chunk)
            if length >= size:
                yield b"".join(group)
                group, length = [], 0
        if group:
            yield b"".join(group)


class SnapshotStore:
    """Holds the latest snapshot of every job and renders scrapes from them.

    A run replaces its job's snapshot whole, so series that vanish from the data vanish
    from /metrics. Rendering only concatenates bytes; the unfiltered output is cached
    until the next change, so repeated scrapes cost a lookup. Bodies are grouped by
    tenant, so a scrape for one tenant reads only that tenant's pieces.
    """

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._owners: dict[str, str] = {}
        self._snapshots: dict[SnapshotKey, Snapshot] = {}
        # family -> tenant ("" for series of no tenant) -> snapshot key -> body
        self._bodies: dict[str, dict[str, dict[SnapshotKey, bytes]]] = {}
        self._cache: dict[bool, Exposition] = {}
        self._revision = 0  # goes up with every change that clears the cache
        # Rendering at fleet size is concatenation, not sorting: per family, each tenant's
        # bodies are kept in key order, tenants in order, and a put marks only its piece.
        self._pieces: dict[str, _Pieces] = {}
        # Snapshots valid until a time, each with what replaces it then (gauges whose data
        # went stale): key -> (until, then), and a heap of (until, key) to find the next.
        self._expiring: dict[SnapshotKey, tuple[float, Snapshot]] = {}
        self._deadlines: list[tuple[float, SnapshotKey]] = []
        self._openmetrics: dict[str, tuple[str, bytes]] = {}  # family -> (group, body)
        self._before: list[Callable[[], None]] = []

    def register(self, families: Iterable[Family], owner: str = "exporter") -> None:
        """Declare families whose headers scrapes write; bodies may refer only to these.

        Each name has one owner (a source kind, or the exporter itself): a second owner
        would put duplicate series on /metrics, so it is refused, as client_python does.
        """
        for family in families:
            current = self._owners.setdefault(family.name, owner)
            if current != owner:
                raise ValueError(
                    f"metric {family.name!r} is exported by both {current} and {owner}"
                )
            self._families[family.name] = family
            self._bodies.setdefault(family.name, {})
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self._revision += 1

    def before_render(self, hook: Callable[[], None]) -> None:
        """Call `hook` before each render: snapshots put lazily are brought up to date."""
        self._before.append(hook)

    def kind(self, name: str) -> str:
        """The registered type of family `name` (`gauge` if unknown: served only while fresh)."""
        family = self._families.get(name)
        return family.type if family is not None else "gauge"

    def put(
        self,
        key: SnapshotKey,
        snapshot: Snapshot,
        until: float | None = None,
        then: Snapshot | None = None,
    ) -> None:
        """Replace the snapshot for `key`; with `until` (Unix time), by `then` at that time."""
        self._expiring.pop(key, None)
        if until is not None and then is not None:
            self._expiring[key] = (until, then)
            heapq.heappush(self._deadlines, (until, key))
        old = self._snapshots.get(key)
        self._snapshots[key] = snapshot
        group = snapshot.group
        self._forget_openmetrics(old)
        if snapshot.openmetrics is not None:
            if snapshot.tenant is not None:
                raise ValueError("OpenMetrics bodies are for the exporter's own series only")
            self._openmetrics.update({n: (group, b) for n, b in snapshot.openmetrics.items()})
        self._replace_bodies(key, old, snapshot)
        self._changed()
        if then is not None and self._deadlines and self._deadlines[0][0] <= time.time():
            # Due ones go now, not only at the next scrape: every run pushes a deadline, and
            # an exporter nobody scraped for a day would hold millions of them.
            self.expire(time.time())

    def _replace_bodies(self, key: SnapshotKey, old: Snapshot | None, new: Snapshot) -> None:
        """Put `new`'s bodies in place of `old`'s.

        In place: removing first would empty and re-create the tenant's entry, and with it
        the family's whole order.
        """
        group, bodies = new.group, new.bodies
        kept: Mapping[str, bytes] = {}
        if old is not None and old.group != group:
            for name in old.bodies:
                self._drop(name, old.group, key)
        elif old is not None:
            kept = old.bodies
            for name in kept.keys() - bodies.keys():
                self._drop(name, group, key)
        for name, body in bodies.items():
            # The very bytes stored already (a reused reply, self-metrics that did not
            # change): most of a run's families, nothing to store or order again.
            if kept.get(name) is body:
                continue
            if not body:
                if name in kept:
                    self._drop(name, group, key)
                continue
            groups = self._bodies[name]
            if group not in groups:
                groups[group] = {}
                self._pieces.pop(name, None)  # a new tenant: the order changes
            groups[group][key] = body
            self._touch(name, group)

    def claim(
        self, key: SnapshotKey, group: str, bodies: Mapping[str, bytes]
    ) -> tuple[dict[str, bytes], int]:
        """`bodies` without the series a key sorting before `key` serves, and how many went.

        Two queries of one tenant may feed one metric; where both produce a label set, the
        query whose name sorts first wins, here and in every scrape.
        """
        kept: dict[str, bytes] = {}
        dropped = 0
        for name, body in bodies.items():
            others = self._bodies.get(name, {}).get(group, {})
            earlier = [b for k, b in others.items() if k < key]
            if not earlier or self._owners.get(name, "exporter") == "exporter":
                kept[name] = body
                continue
            taken = {series_id(line) for b in earlier for line in b.splitlines()}
            lines = body.splitlines(keepends=True)
            mine = [line for line in lines if series_id(line) not in taken]
            dropped += len(lines) - len(mine)
            kept[name] = b"".join(mine)
        return kept, dropped

    def expire(self, now: float) -> None:
        """Replace every snapshot whose time is up by its successor (each render does this)."""
        while self._deadlines and self._deadlines[0][0] <= now:
            until, key = heapq.heappop(self._deadlines)
            pending = self._expiring.get(key)
            if pending is not None and pending[0] == until:  # not replaced since
                self.put(key, pending[1])

    def remove(self, key: SnapshotKey) -> None:
        """Forget the job `key`; its series disappear from the next scrape."""
        self._expiring.pop(key, None)
        old = self._snapshots.pop(key, None)
        self._forget_openmetrics(old)
        if old is not None:
            for name in old.bodies:
                self._drop(name, old.group, key)
        self._changed()

    def _forget_openmetrics(self, old: Snapshot | None) -> None:
        """A replaced or removed snapshot's OpenMetrics bodies are served no more."""
        for name in (old.openmetrics or {}) if old is not None else ():
            self._openmetrics.pop(name, None)

    def __contains__(self, key: object) -> bool:
        return key in self._snapshots

    def _drop(self, name: str, group: str, key: SnapshotKey) -> None:
        groups = self._bodies[name]
        bodies = groups.get(group)
        if bodies is None or bodies.pop(key, None) is None:
            return
        self._touch(name, group)
        if not bodies:
            del groups[group]
            self._pieces.pop(name, None)

    def _touch(self, name: str, group: str) -> None:
        pieces = self._pieces.get(name)
        if pieces is not None:
            pieces.touch(group)

    def _current(self, name: str) -> "_Pieces":
        """The family's pieces, with those touched since the last render ordered again."""
        pieces = self._pieces.get(name)
        if pieces is None:
            # A source's family may be fed by several queries of one tenant: the same
            # label set from two of them is served once (see `claim`).
            order = _unique if self._owners.get(name, "exporter") != "exporter" else _ordered
            pieces = self._pieces[name] = _Pieces(self._bodies[name], order)
        pieces.refresh(self._bodies[name])
        return pieces

    def render(self, openmetrics: bool, tenants: frozenset[str] | None = None) -> bytes:
        """Exposition bytes for all tenants, or only `tenants` plus the exporter's public series.

        Without OpenMetrics' final `# EOF`: the HTTP layer ends the output.
        """
        return self.exposition(openmetrics, tenants).join()

    def exposition(self, openmetrics: bool, tenants: frozenset[str] | None = None) -> Exposition:
        """What `render` returns, as the stored pieces: the same object until the next change."""
        for hook in self._before:
            hook()
        self.expire(time.time())
        if tenants is None and openmetrics in self._cache:
            return self._cache[openmetrics]
        wanted = None if tenants is None else sorted({"", *tenants})
        parts: list[bytes] = []
        for name in sorted(self._bodies):
            groups = self._bodies[name]
            if not groups or (wanted is not None and not any(g in groups for g in wanted)):
                continue
            pieces = self._current(name)
            parts.append(self._families[name].header(openmetrics))
            special = self._openmetrics.get(name) if openmetrics else None
            if special is not None and (wanted is None or special[0] in wanted):
                parts.append(special[1])
            elif wanted is None:
                parts.extend(itertools.chain.from_iterable(pieces.ordered))
            else:
                chosen = (pieces.of(g) for g in wanted if g in groups)
                parts.extend(itertools.chain.from_iterable(chosen))
        if tenants is not None:
            return Exposition(tuple(parts), sum(map(len, parts)))
        output = Exposition(tuple(parts), sum(map(len, parts)), (self._revision, openmetrics))
        self._cache[openmetrics] = output
        return output


class _Pieces:
    """One family's bodies per tenant, in key order, and the tenants kept in order."""

    def __init__(
        self,
        groups: dict[str, dict[SnapshotKey, bytes]],
        order: Callable[[dict[SnapshotKey, bytes]], tuple[bytes, ...]],
    ) -> None:
        self.order = sorted(groups)
        self.index = {group: i for i, group in enumerate(self.order)}
        self._order = order
        self.ordered = [order(groups[group]) for group in self.order]
        self.dirty: set[int] = set()

    def touch(self, group: str) -> None:
        """Mark a tenant's piece to be ordered again, and let go of its old bodies now."""
        position = self.index.get(group)
        if position is not None:
            # Held until the next scrape, replaced bodies were a second copy of the data.
            self.ordered[position] = ()
            self.dirty.add(position)

    def refresh(self, groups: dict[str, dict[SnapshotKey, bytes]]) -> None:
        """Order again the pieces touched since the last refresh."""
        for position in self.dirty:
            self.ordered[position] = self._order(groups[self.order[position]])
        self.dirty.clear()

    def of(self, group: str) -> tuple[bytes, ...]:
        """One tenant's piece."""
        return self.ordered[self.index[group]]


def _ordered(bodies: dict[SnapshotKey, bytes]) -> tuple[bytes, ...]:
    # The bodies themselves, in key order: a joined copy would double the self-metrics,
    # which every job of a tenant feeds.
    if len(bodies) == 1:  # most tenants have one job per family: nothing to order
        return tuple(bodies.values())
    return tuple(bodies[key] for key in sorted(bodies))


def _unique(bodies: dict[SnapshotKey, bytes]) -> tuple[bytes, ...]:
    """Like `_ordered`, but a series (name and labels) a key sorting earlier has is left out."""
    if len(bodies) == 1:
        return tuple(bodies.values())
    seen: set[bytes] = set()
    lines: list[bytes] = []
    for key in sorted(bodies):
        for line in bodies[key].splitlines(keepends=True):
            series = series_id(line)
            if series not in seen:
                seen.add(series)
                lines.append(line)
    return (b"".join(lines),)


def series_id(line: bytes) -> bytes:
    """A sample line's name and labels: everything before the value."""
    return line.rsplit(b" ", 1)[0]
