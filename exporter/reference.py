"""Every metric family the exporter itself defines: what rules and dashboards may refer to."""

from exporter import audit, spans
from exporter.discovery import FAMILIES as DISCOVERY_FAMILIES
from exporter.exposition import Family
from exporter.selfmetrics import BUILD_INFO, CONFIG_FAMILIES, DURATION, JOB_FAMILIES
from exporter.sharding import FAMILIES as SHARD_FAMILIES
from exporter.sources.platform import families as platform

_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
# Who exports each family: a configured metric may not take one of these names.
_OWNERS: dict[str, tuple[Family, ...]] = {
    "the exporter": (
        *JOB_FAMILIES,
        BUILD_INFO,
        *CONFIG_FAMILIES,
        *DISCOVERY_FAMILIES,
        *SHARD_FAMILIES,
        DURATION,
        spans.DROPPED,
        audit.FAILURES,
        audit.RECORDS,
    ),
    "the platform source": (*platform.DATA_FAMILIES, *platform.CLIENT_FAMILIES),
}


def exported_families() -> tuple[Family, ...]:
    """Self-metrics and platform metrics (configured SQL metrics are the user's own)."""
    return tuple(family for families in _OWNERS.values() for family in families)


def _series_names(family: Family) -> tuple[str, ...]:
    return (family.name, *(family.name + s for s in _SUFFIXES.get(family.type, ())))


def exported_series_names() -> frozenset[str]:
    """Series names a query can select, histogram and summary parts included."""
    return frozenset(name for family in exported_families() for name in _series_names(family))


def exported_owners() -> dict[str, str]:
    """Series names of the exporter's own families, with who exports them."""
    return {
        name: owner
        for owner, families in _OWNERS.items()
        for family in families
        for name in _series_names(family)
    }
