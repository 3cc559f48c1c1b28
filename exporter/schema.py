"""Pydantic models of the YAML configuration file; unknown keys are errors everywhere."""

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from exporter import crons
from exporter.durations import Duration, parse_duration
from exporter.fields import HttpUrl, Model, TenantId, matching
from exporter.receivers import Alerting, Grafana, Receiver, TenantGrafana

# Colons are for recording rules, not exporters.
METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
QUERY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Self-metrics live under these prefixes; user metrics there would collide with ours.
RESERVED_METRIC_PREFIXES = (
    "cockpit_collection_",
    "cockpit_exporter_",
    "process_",
    "python_",
    "scrape_",
)
RESERVED_LABELS = frozenset({"tenant", "source", "query", "job", "instance"})
DSN_SCHEMES = ("mysql", "mariadb", "mysql+aiomysql", "sqlite", "sqlite+aiosqlite")


# Statements that change the session a shared connection keeps for every later run of every
# tenant (its access mode, database or transaction): refused when the config loads.
SESSION_STATEMENTS = frozenset({
    "SET", "USE", "START", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "LOCK",
    "UNLOCK", "XA", "PRAGMA",
})  # fmt: skip
# Whitespace, comments and parentheses before a statement's first word; MySQL runs the text of
# a `/*!` comment, so that is read as if the comment were not there.
_BEFORE_STATEMENT = re.compile(r"(?:\s+|--[^\n]*|#[^\n]*|/\*(?!!)[\s\S]*?\*/|/\*!\d*|\()+")
_WORD = re.compile(r"[A-Za-z]+")


def _reads_only(sql: str) -> str:
    skipped = _BEFORE_STATEMENT.match(sql)
    word = _WORD.match(sql, skipped.end() if skipped else 0)
    if word is not None and word.group().upper() in SESSION_STATEMENTS:
        raise ValueError(
            f"a {word.group().upper()} statement would change the session that later runs"
            " share; a query only reads (SELECT, WITH, SHOW, ...)"
        )
    return sql


QuerySql = Annotated[str, Field(min_length=1), AfterValidator(_reads_only)]


def _check_metric_name(name: str) -> str:
    if name.startswith(RESERVED_METRIC_PREFIXES):
        raise ValueError(f"metric name {name!r} uses a reserved prefix; pick another name")
    return name


def _check_label_name(name: str) -> str:
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is reserved: names starting with __ are internal")
    if name in RESERVED_LABELS:
        raise ValueError(f"label name {name!r} is reserved: the exporter or Prometheus sets it")
    return name


def check_type_suffix(name: str, kind: str) -> None:
    """Counters end in _total and nothing else does (Prometheus' naming rules)."""
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total (e.g. {name}_total)")
    if kind != "counter" and name.endswith("_total"):
        raise ValueError(f"{kind} {name!r} must not end in _total; it is for counters")
    if kind in ("histogram", "summary") and name.endswith(("_bucket", "_count", "_sum")):
        raise ValueError(f"{kind} {name!r} must not end in _bucket, _count or _sum (its series do)")


MetricName = Annotated[
    str, matching(METRIC_NAME, "metric name"), AfterValidator(_check_metric_name)
]
LabelName = Annotated[str, matching(LABEL_NAME, "label name"), AfterValidator(_check_label_name)]
QueryName = Annotated[str, matching(QUERY_NAME, "query name")]
ParamValue = str | int | float | bool
ParamName = Annotated[str, matching(LABEL_NAME, "parameter name")]


class Defaults(Model):
    """Values queries fall back to when they do not set their own."""

    interval: Duration = 30.0
    timeout: Duration = 10.0
    max_series: int = Field(10_000, ge=1)
    max_connections_per_server: int = Field(4, ge=1, le=256)
    idle_timeout: Duration = 60.0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "pool_size" in data:
            raise ValueError(
                "pool_size was per database; connections are now shared per server:"
                " use max_connections_per_server"
            )
        return data


# The size of an upstream answer after decompression: bounds memory whatever it claims.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
FollowRedirects = Literal["none", "same_origin"]


class Limits(Model):
    """Process-wide limits."""

    max_concurrent_queries: int = Field(128, ge=1, le=1024)
    max_response_bytes: int = Field(MAX_RESPONSE_BYTES, ge=1024, le=1024**3)
    # Every counter is served from zero either way; full adds the series gauge per job.
    self_metrics: Literal["basic", "full"] = "basic"


class Database(Model):
    """Where a tenant's SQL data lives and how to authenticate."""

    dsn: str
    password_file: Path | None = None
    password_env: str | None = None

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, dsn: str) -> str:
        scheme = dsn.split("://", 1)[0] if "://" in dsn else ""
        if scheme not in DSN_SCHEMES:
            raise ValueError(
                "must start with mysql://, mariadb:// or sqlite:// "
                "(e.g. mysql://user@host:3306/db or sqlite:///path/to/file.db)"
            )
        return dsn

    @model_validator(mode="after")
    def _one_password_source(self) -> "Database":
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        return self


class Platform(Model):
    """Where a tenant's platform API is and how to get a token for it."""

    base_url: HttpUrl
    token_url: HttpUrl
    client_id: str = Field(min_length=1)
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    scope: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    stale_after: Duration | None = None
    forget_after: Duration = 86400.0
    request_timeout: Duration = 10.0
    page_size: int = Field(100, ge=1, le=1000)
    follow_redirects: FollowRedirects = "none"
    overlap: Duration = 120.0
    lookback: float = Field(0.0, ge=0)
    history: Duration = 86400.0

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, value: object) -> float:
        return 0.0 if value in (0, "0", "0s") else parse_duration(value)

    @model_validator(mode="after")
    def _one_secret_source(self) -> "Platform":
        if (self.client_secret_file is None) == (self.client_secret_env is None):
            raise ValueError("set exactly one of client_secret_file and client_secret_env")
        return self


class Tenant(Model):
    """One tenant: its id becomes the `tenant` label on every series."""

    id: TenantId
    mysql: Database | None = None
    platform: Platform | None = None
    receivers: list[Receiver] = Field(default_factory=list)
    grafana: TenantGrafana | None = None
    params: dict[Annotated[str, matching(LABEL_NAME, "parameter name")], ParamValue] = Field(
        default_factory=dict
    )
    # Added to every series of the tenant's queries, after `tenant` (query-exporter's
    # per-database labels).
    labels: dict[LabelName, str] = Field(default_factory=dict)


class Metric(Model):
    """One metric fed by a query: label columns and a value column (or several)."""

    name: MetricName
    type: Literal["gauge", "counter", "histogram", "summary", "enum"]
    help: str = Field(min_length=1)
    labels: list[LabelName] = Field(default_factory=list)
    value: str | None = Field(None, min_length=1)
    # Several value columns, one series each, told apart by the label `value_label`.
    values: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    value_label: LabelName | None = None
    # A NULL label skips the row (counted); with this, the label reads this text instead.
    null_label: str | None = None
    buckets: list[float] | None = Field(None, min_length=1)  # histogram: upper bounds
    states: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    increment: bool = False  # counter: each run adds its value to a durable total

    @model_validator(mode="after")
    def _naming(self) -> "Metric":
        check_type_suffix(self.name, self.type)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must not repeat")
        if (self.value is None) == (self.values is None):
            raise ValueError("set exactly one of value and values")
        if (self.values is None) != (self.value_label is None):
            raise ValueError("values and value_label go together")
        if self.value_label is not None and self.value_label in self.labels:
            raise ValueError(f"value_label {self.value_label!r} is also in labels")
        self._check_kind()
        return self

    def _check_kind(self) -> None:
        for key, kind in (("buckets", "histogram"), ("states", "enum")):
            if (getattr(self, key) is None) == (self.type == kind):
                raise ValueError(f"{key} is needed by type {kind}, and only by it")
        if self.increment and self.type != "counter":
            raise ValueError("increment is for counters")
        if self.buckets is not None and (
            sorted(set(self.buckets)) != self.buckets or not all(map(math.isfinite, self.buckets))
        ):
            raise ValueError("buckets must be finite and strictly increasing (+Inf is implied)")
        if self.states is not None and len(set(self.states)) != len(self.states):
            raise ValueError("states must not repeat")
        if self.type == "enum" and self.name in self.labels:
            raise ValueError(f"an enum's state label is its name; {self.name!r} is in labels")


class Query(Model):
    """A SQL statement run on a schedule for each of its tenants."""

    name: QueryName
    sql: QuerySql
    interval: Duration | None = None
    schedule: str | None = None  # a crontab expression (UTC) instead of the interval
    timeout: Duration | None = None
    stale_after: Duration | None = None
    max_series: int | None = Field(None, ge=1)
    min_rows: int = Field(0, ge=0)  # fewer rows fail the run with reason too_few_rows
    # One execution per set, each bound like tenants[].params (and over them).
    parameters: list[dict[ParamName, ParamValue]] | None = Field(None, min_length=1, max_length=100)
    tenants: list[TenantId] | None = None
    metrics: list[Metric] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_cadence(self) -> "Query":
        if self.schedule is not None:
            if self.interval is not None:
                raise ValueError("set interval or schedule, not both")
            crons.longest_gap(self.schedule)  # ValueError names what is wrong
        return self

    def cadence(self, defaults: "Defaults") -> float:
        """Seconds between runs: the interval, or a schedule's longest gap between firings."""
        if self.schedule is not None:
            return crons.longest_gap(self.schedule)
        return self.interval or defaults.interval


SERVER_ADDRESS = re.compile(r"[^\s:/@]+:[0-9]{1,5}")


class Server(Model):
    """Overrides for one database server, keyed `host:port` as written in the DSNs."""

    max_connections: int | None = Field(None, ge=1, le=256)
    idle_timeout: Duration | None = None


class TenantDiscovery(Database):
    """A registry query whose rows are tenants (columns `id`, `database`, params)."""

    sql: QuerySql
    interval: Duration = 60.0
    timeout: Duration = 10.0
    max_tenants: int = Field(10_000, ge=1)
    mysql: Database


class ConfigFile(Model):
    """The whole configuration file."""

    defaults: Defaults = Field(default_factory=Defaults)
    limits: Limits = Field(default_factory=Limits)
    servers: dict[Annotated[str, matching(SERVER_ADDRESS, "host:port")], Server] = Field(
        default_factory=dict
    )
    tenant_discovery: TenantDiscovery | None = None
    tenants: list[Tenant] = Field(default_factory=list)
    queries: list[Query] = Field(default_factory=list)
    alerting: Alerting | None = None
    grafana: Grafana | None = None
