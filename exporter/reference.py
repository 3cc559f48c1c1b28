"""Every metric family the exporter itself defines: what rules and dashboards may refer to."""

from exporter.exposition import Family
from exporter.platform import families as platform
from exporter.selfmetrics import BUILD_INFO, CONFIG_FAMILIES, JOB_FAMILIES

_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported_families() -> tuple[Family, ...]:
    """Self-metrics and platform metrics (configured SQL metrics are the user's own)."""
    return (
        *JOB_FAMILIES,
        BUILD_INFO,
        *CONFIG_FAMILIES,
        *platform.DATA_FAMILIES,
        *platform.CLIENT_FAMILIES,
    )


def exported_series_names() -> frozenset[str]:
    """Series names a query can select, histogram and summary parts included."""
    names: set[str] = set()
    for family in exported_families():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return frozenset(names)
