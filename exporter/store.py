"""Pre-rendered snapshots per (tenant, source, query), concatenated into scrape output."""

from collections.abc import Iterable, Mapping
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

    @property
    def group(self) -> str:
        """Which group of the store's bodies the snapshot belongs to."""
        if self.tenant is not None:
            return self.tenant
        return OPERATORS_GROUP if self.operators_only else ""


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
        self._cache: dict[bool, bytes] = {}
        # Rendering at fleet size is joins, not sorting: each (family, tenant) piece is kept
        # joined until a put touches it, and each family's tenants are kept in order.
        self._joined: dict[str, dict[str, bytes]] = {}
        self._order: dict[str, list[str]] = {}

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
            self._joined.setdefault(family.name, {})
        self._cache.clear()

    def put(self, key: SnapshotKey, snapshot: Snapshot) -> None:
        """Replace the snapshot for `key`."""
        self._drop_bodies(key)
        self._snapshots[key] = snapshot
        group = snapshot.group
        for name, body in snapshot.bodies.items():
            if body:
                groups = self._bodies[name]
                if group not in groups:
                    groups[group] = {}
                    self._order.pop(name, None)
                groups[group][key] = body
                self._joined[name].pop(group, None)
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
        if old is None:
            return
        group = old.group
        for name in old.bodies:
            groups = self._bodies[name]
            bodies = groups.get(group)
            if bodies is not None:
                bodies.pop(key, None)
                self._joined[name].pop(group, None)
                if not bodies:
                    del groups[group]
                    self._order.pop(name, None)

    def _ordered(self, name: str) -> list[str]:
        order = self._order.get(name)
        if order is None:
            order = self._order[name] = sorted(self._bodies[name])
        return order

    def _piece(self, name: str, group: str) -> bytes:
        """One tenant's lines of one family, joined once per change."""
        joined = self._joined[name]
        piece = joined.get(group)
        if piece is None:
            bodies = self._bodies[name][group]
            piece = joined[group] = b"".join(bodies[k] for k in sorted(bodies))
        return piece

    def render(self, openmetrics: bool, tenants: frozenset[str] | None = None) -> bytes:
        """Exposition bytes for all tenants, or only `tenants` plus the exporter's public series.

        Without OpenMetrics' final `# EOF`: the HTTP layer ends the output.
        """
        if tenants is None and openmetrics in self._cache:
            return self._cache[openmetrics]
        wanted = None if tenants is None else sorted({"", *tenants})
        parts: list[bytes] = []
        for name in sorted(self._bodies):
            groups = self._bodies[name]
            selected = self._ordered(name) if wanted is None else [g for g in wanted if g in groups]
            if not selected:
                continue
            parts.append(self._families[name].header(openmetrics))
            parts.extend(self._piece(name, group) for group in selected)
        output = b"".join(parts)
        if tenants is None:
            self._cache[openmetrics] = output
        return output
