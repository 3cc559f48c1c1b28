"""Pre-rendered snapshots per (tenant, source, query), concatenated into scrape output."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.exposition import OPENMETRICS_EOF, Family

SnapshotKey = tuple[str, str, str]


@dataclass(frozen=True)
class Snapshot:
    """The rendered sample lines of one collection run, by metric family name."""

    tenant: str | None
    bodies: Mapping[str, bytes]


class SnapshotStore:
    """Holds the latest snapshot of every job and renders scrapes from them.

    A run replaces its job's snapshot whole, so series that vanish from the data vanish
    from /metrics. Rendering only concatenates bytes; the unfiltered output is cached
    until the next change, so repeated scrapes cost a lookup.
    """

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._snapshots: dict[SnapshotKey, Snapshot] = {}
        self._bodies: dict[str, dict[SnapshotKey, bytes]] = {}
        self._cache: dict[bool, bytes] = {}

    def register(self, families: Iterable[Family]) -> None:
        """Declare families whose headers scrapes write; bodies may refer only to these."""
        for family in families:
            self._families[family.name] = family
            self._bodies.setdefault(family.name, {})
        self._cache.clear()

    def put(self, key: SnapshotKey, snapshot: Snapshot) -> None:
        """Replace the snapshot for `key`."""
        self._drop_bodies(key)
        self._snapshots[key] = snapshot
        for name, body in snapshot.bodies.items():
            if body:
                self._bodies[name][key] = body
        self._cache.clear()

    def remove(self, key: SnapshotKey) -> None:
        """Forget the job `key`; its series disappear from the next scrape."""
        self._drop_bodies(key)
        self._snapshots.pop(key, None)
        self._cache.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._snapshots

    def _drop_bodies(self, key: SnapshotKey) -> None:
        old = self._snapshots.get(key)
        if old is not None:
            for name in old.bodies:
                self._bodies[name].pop(key, None)

    def render(self, openmetrics: bool, tenants: frozenset[str] | None = None) -> bytes:
        """Exposition bytes for all tenants, or only `tenants` (non-tenant series always)."""
        if tenants is None and openmetrics in self._cache:
            return self._cache[openmetrics]
        parts: list[bytes] = []
        for name in sorted(self._bodies):
            bodies = self._bodies[name]
            keys = sorted(k for k in bodies if tenants is None or self._visible(k, tenants))
            if keys:
                parts.append(self._families[name].header(openmetrics))
                parts.extend(bodies[k] for k in keys)
        if openmetrics:
            parts.append(OPENMETRICS_EOF)
        output = b"".join(parts)
        if tenants is None:
            self._cache[openmetrics] = output
        return output

    def _visible(self, key: SnapshotKey, tenants: frozenset[str]) -> bool:
        tenant = self._snapshots[key].tenant
        return tenant is None or tenant in tenants
