"""query-exporter's config (databases, metrics, queries) as ours.

Each database becomes a tenant (its `labels.tenant`, else its name, is the id) with the
labels query-exporter adds to its series (`database` and the database's `labels`), so
series keep their names, labels and values.
"""

import itertools
from typing import Any

from exporter.importers.common import (
    Imported,
    database,
    label_name,
    query_name,
    secret_env,
    tenant_id,
    wrapped,
)

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 10.0


def convert(document: dict[str, Any]) -> Imported:
    """Our config for a query-exporter config, with a note per thing not carried over."""
    result = Imported()
    tenants = _tenants(document.get("databases") or {}, result)
    metrics = document.get("metrics") or {}
    queries = [
        _query(name, query, metrics, tenants, result)
        for name, query in (document.get("queries") or {}).items()
    ]
    result.config = {
        "tenants": list(tenants.values()),
        "queries": [q for q in queries if q is not None],
    }
    if document.get("builtin-metrics"):
        result.note("builtin-metrics", "not carried: cockpit_collection_* cover them")
    return result


def _tenants(databases: dict[str, Any], result: Imported) -> dict[str, dict[str, Any]]:
    """Database name -> our tenant."""
    tenants: dict[str, dict[str, Any]] = {}
    for name, spec in databases.items():
        where = f"databases.{name}"
        dsn = spec.get("dsn")
        section = (
            database(dsn, where, result, secret_env("QE", name)) if isinstance(dsn, str) else None
        )
        if section is None:
            if not isinstance(dsn, str):
                result.note(where, "a DSN given as parts is not carried; write it as a URL")
            continue
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        wanted = labels.pop("tenant", name)
        ident = tenant_id(wanted)
        if ident != wanted:
            result.note(where, f"tenant id {wanted!r} becomes {ident!r} (ids are [a-z0-9_-])")
        own = {"database": name} | {label_name(k): v for k, v in labels.items()}
        for key in sorted(labels):
            if label_name(key) != key:
                result.note(f"{where}.labels.{key}", f"reserved: served as {label_name(key)}")
        for key in ("connect-sql", "connection-pool"):
            if spec.get(key):
                result.note(f"{where}.{key}", "not carried: sessions here are shared and read-only")
        tenants[name] = {"id": ident, "mysql": section, "labels": own}
    return tenants


def _query(
    name: str,
    query: dict[str, Any],
    metrics: dict[str, Any],
    tenants: dict[str, dict[str, Any]],
    result: Imported,
) -> dict[str, Any] | None:
    where = f"queries.{name}"
    ours = [tenants[d]["id"] for d in query.get("databases") or [] if d in tenants]
    if not ours:
        result.note(where, "none of its databases could be carried over; left out")
        return None
    renamed: dict[str, str] = {}
    converted = [
        _metric(m, metrics.get(m) or {}, f"metrics.{m}", renamed, result)
        for m in query.get("metrics") or []
    ]
    out: dict[str, Any] = {"name": query_name(name), "sql": wrapped(str(query["sql"]), renamed)}
    if out["name"] != name:
        result.note(where, f"named {out['name']} here (query names are [a-zA-Z0-9_])")
    out |= _cadence(query, where, result)
    if query.get("parameters"):
        out["parameters"] = _parameter_sets(query["parameters"])
    return out | {"tenants": ours, "metrics": converted}


def _cadence(query: dict[str, Any], where: str, result: Imported) -> dict[str, Any]:
    """Interval or schedule, and a timeout within it (ours may not exceed the interval)."""
    out: dict[str, Any] = {}
    interval = _seconds(query.get("interval"))
    if query.get("schedule"):
        out["schedule"] = str(query["schedule"])
    elif interval is not None:
        out["interval"] = f"{interval:g}s"
    else:
        result.note(where, "ran at every scrape in query-exporter; here every 30s (set interval)")
    timeout = query.get("timeout")
    limit = interval or DEFAULT_INTERVAL
    if timeout is None and limit < DEFAULT_TIMEOUT:
        out["timeout"] = f"{limit:g}s"  # ours may not exceed the interval
    elif timeout is not None:
        wanted = float(timeout)
        if wanted > limit and "schedule" not in out:
            result.note(where, f"timeout {wanted:g}s is longer than the interval: {limit:g}s here")
            wanted = limit
        out["timeout"] = f"{wanted:g}s"
    return out


def _seconds(value: object) -> float | None:
    """query-exporter's interval: seconds, or a number with s, m, h or d."""
    if value is None:
        return None
    text = str(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _parameter_sets(parameters: object) -> list[dict[str, Any]]:
    """A list as it is; query-exporter's matrix form ({a: [...], b: [...]}) expanded as it does."""
    if isinstance(parameters, list):
        return [dict(p) for p in parameters]
    assert isinstance(parameters, dict)
    groups = [
        [{f"{top}__{k}": v for k, v in p.items()} for p in sets] for top, sets in parameters.items()
    ]
    return [
        {k: v for part in combination for k, v in part.items()}
        for combination in itertools.product(*groups)
    ]


def _metric(
    name: str, spec: dict[str, Any], where: str, renamed: dict[str, str], result: Imported
) -> dict[str, Any]:
    """Our metric for one of query-exporter's: its value column is the metric's name."""
    kind = spec.get("type", "gauge")
    ours = f"{name.removesuffix('_total')}_total" if kind == "counter" else name
    labels = []
    for label in spec.get("labels") or []:
        served = label_name(label)
        if served != label:
            renamed[served] = f"imported.{label}"
            result.note(f"{where}.labels", f"{label} is reserved: served as {served}")
        labels.append(served)
    out: dict[str, Any] = {
        "name": ours,
        "type": kind,
        "help": spec.get("description") or name,
        "labels": labels,
        "value": name,
    }
    for key in ("buckets", "states", "increment"):
        if spec.get(key):
            out[key] = spec[key]
    if spec.get("expiration"):
        result.note(f"{where}.expiration", "not carried: gauges go stale after stale_after")
    return out
