"""sql_exporter's configs as ours, in both formats people run.

- 0.4.5 (justwatchcom, Debian's `prometheus-sql-exporter`): `jobs:` with `connections:` and
  `queries:`. Each query is the gauge `sql_<name>`, one series per value column (label `col`),
  labelled with the connection (`database`, `driver`, `host`, `user`) and the job (`sql_job`):
  those become the tenant's labels, one tenant per job and connection.
- burningalchemist/sql_exporter: `target:` or `jobs:` with `collectors:` of `metrics:`
  (`metric_name`, `key_labels`, `static_labels`, `values`, `value_label`, `query`/`query_ref`).
"""

import re
from typing import Any

from exporter.durations import parse_duration
from exporter.importers.common import (
    Imported,
    database,
    label_name,
    query_name,
    quoted,
    secret_env,
    tenant_id,
    wrapped,
)

_GO_MYSQL = re.compile(
    r"^mysql://(?:(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:tcp\((?P<host>[^)]*)\))?/(?P<database>[^?]*)(?:\?(?P<options>.*))?$"
)


def convert(document: dict[str, Any]) -> Imported:
    """Our config for either format, told apart by their keys."""
    if "collectors" in document or "target" in document or "collector_files" in document:
        return _burningalchemist(document)
    return _justwatch(document)


def _justwatch(document: dict[str, Any]) -> Imported:
    result = Imported()
    tenants: dict[str, dict[str, Any]] = {}
    queries: list[dict[str, Any]] = []
    helps: dict[str, str] = {}
    for ji, job in enumerate(document.get("jobs") or []):
        where = f"jobs[{ji}]"
        if job.get("startup_sql"):
            result.note(f"{where}.startup_sql", "not carried: sessions here are read-only")
        name = str(job.get("name", ji))
        found = (
            _connection(dsn, name, f"{where}.connections[{ci}]", tenants, result)
            for ci, dsn in enumerate(job.get("connections") or [])
        )
        ids = [i for i in found if i is not None]
        if not ids:
            result.note(where, "no connection could be carried over; its queries are left out")
            continue
        for qi, query in enumerate(job.get("queries") or []):
            at = f"{where}.queries[{qi}]"
            queries.append(_justwatch_query(job, query, ids, at, helps=helps, result=result))
    result.config = {"tenants": list(tenants.values()), "queries": queries}
    return result


def _connection(
    dsn: str, job: str, where: str, tenants: dict[str, dict[str, Any]], result: Imported
) -> str | None:
    """The tenant for one connection of a job; its labels are what sql_exporter adds."""
    found = _GO_MYSQL.match(dsn)
    if found is None:
        result.note(where, "only mysql:// connections are read here; left out")
        return None
    host = found["host"] or "127.0.0.1:3306"
    user = found["user"] or ""
    url = f"mysql://{user}{':' + found['password'] if found['password'] else ''}@{host}/"
    section = database(
        url + found["database"], where, result, secret_env("SQLX", job, found["database"])
    )
    if section is None:
        return None
    labels = {"database": found["database"], "driver": "mysql", "host": host, "user": user,
              "sql_job": job}  # fmt: skip
    ident = tenant_id(found["database"])
    if ident in tenants and tenants[ident]["labels"] != labels:
        ident = tenant_id(f"{found['database']}-{job}")
    tenants[ident] = {"id": ident, "mysql": section, "labels": labels}
    return ident


def _justwatch_query(
    job: dict[str, Any],
    query: dict[str, Any],
    ids: list[str],
    where: str,
    *,
    helps: dict[str, str],
    result: Imported,
) -> dict[str, Any]:
    metric = f"sql_{query['name']}"
    helps.setdefault(metric, str(query.get("help") or metric))
    if helps[metric] != (query.get("help") or metric):
        result.note(where, f"{metric} is also in another job with other help; the first is kept")
    renamed = {label_name(c): f"imported.{c}" for c in query.get("labels") or []
               if label_name(c) != c}  # fmt: skip
    for served in renamed:
        result.note(f"{where}.labels", f"{served.removeprefix('exported_')} served as {served}")
    out: dict[str, Any] = {
        "name": query_name(f"{job.get('name', 'job')}_{query['name']}"),
        "sql": wrapped(str(query["query"]), renamed),
        "tenants": ids,
        "metrics": [{
            "name": metric, "type": "gauge", "help": helps[metric],
            "labels": [label_name(c) for c in query.get("labels") or []],
            "values": list(query.get("values") or []), "value_label": "col",
        }],
    }  # fmt: skip
    if job.get("interval"):
        out["interval"] = str(job["interval"])
        out["timeout"] = f"{min(10.0, parse_duration(str(job['interval']))):g}s"
    return out


def _burningalchemist(document: dict[str, Any]) -> Imported:
    result = Imported()
    if document.get("collector_files"):
        result.note("collector_files", "not read: paste those collectors under collectors:")
    collectors = {c["collector_name"]: c for c in document.get("collectors") or []}
    tenants: list[dict[str, Any]] = []
    wanted: dict[str, list[str]] = {}
    target = document.get("target")
    if target:
        name, dsn = str(target.get("name") or "target"), str(target["data_source_name"])
        ident = _target_tenant("target", name, dsn, {}, tenants=tenants, result=result)
        if ident:
            for name in target.get("collectors") or []:
                wanted.setdefault(name, []).append(ident)
    for ji, job in enumerate(document.get("jobs") or []):
        for si, static in enumerate(job.get("static_configs") or []):
            for name, dsn in (static.get("targets") or {}).items():
                at, labels = f"jobs[{ji}].static_configs[{si}]", static.get("labels") or {}
                ident = _target_tenant(at, name, str(dsn), labels, tenants=tenants, result=result)
                for collector in job.get("collectors") or [] if ident else []:
                    wanted.setdefault(collector, []).append(ident)  # type: ignore[arg-type]
    queries = [
        q
        for name, collector in collectors.items()
        for q in _collector(name, collector, wanted.get(name, []), result)
    ]
    result.config = {"tenants": tenants, "queries": queries}
    return result


def _target_tenant(
    where: str,
    name: str,
    dsn: str,
    labels: dict[str, Any],
    *,
    tenants: list[dict[str, Any]],
    result: Imported,
) -> str | None:
    section = database(dsn, where, result, secret_env("SQLX", name))
    if section is None:
        return None
    ident = tenant_id(name)
    tenants.append({"id": ident, "mysql": section,
                    "labels": {label_name(str(k)): str(v) for k, v in labels.items()}})  # fmt: skip
    return ident


def _collector(
    name: str, collector: dict[str, Any], ids: list[str], result: Imported
) -> list[dict[str, Any]]:
    where = f"collectors.{name}"
    if not ids:
        result.note(where, "no target uses it; left out")
        return []
    shared = {q["query_name"]: q["query"] for q in collector.get("queries") or []}
    interval = collector.get("min_interval")
    if not interval or parse_duration(str(interval)) <= 0:
        result.note(where, "ran at scrape time in sql_exporter; here every 30s (set interval)")
    queries = []
    for mi, metric in enumerate(collector.get("metrics") or []):
        sql = metric.get("query") or shared.get(metric.get("query_ref", ""))
        if sql is None:
            result.note(f"{where}.metrics[{mi}]", "its query_ref names no query; left out")
            continue
        query = _burning_metric(metric, str(sql), f"{where}.metrics[{mi}]", result)
        query["name"] = query_name(f"{name}_{metric['metric_name']}")
        query["tenants"] = ids
        if interval and parse_duration(str(interval)) > 0:
            query["interval"] = str(interval)
        queries.append(query)
    return queries


def _burning_metric(
    metric: dict[str, Any], sql: str, where: str, result: Imported
) -> dict[str, Any]:
    labels = [str(c) for c in metric.get("key_labels") or []]
    extra = {label_name(c): f"imported.{c}" for c in labels if label_name(c) != c}
    static = {
        label_name(str(k)): quoted(str(v)) for k, v in (metric.get("static_labels") or {}).items()
    }
    values = [str(v) for v in metric.get("values") or []]
    ours: dict[str, Any] = {
        "name": metric["metric_name"],
        "type": metric.get("type", "gauge"),
        "help": metric.get("help") or metric["metric_name"],
        "labels": [label_name(c) for c in labels] + list(static),
    }
    if len(values) > 1 or metric.get("value_label"):
        ours |= {"values": values, "value_label": metric.get("value_label") or "value"}
    else:
        ours["value"] = values[0] if values else metric["metric_name"]
    for key in ("timestamp_value",):
        if metric.get(key):
            result.note(f"{where}.{key}", "not carried: samples carry no timestamps here")
    return {"sql": wrapped(sql, extra | static), "metrics": [ours]}
