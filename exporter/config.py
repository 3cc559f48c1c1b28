"""Load the configuration file, check it as a whole and resolve secrets into runnable jobs."""

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from exporter import schema
from exporter.durations import stale_after
from exporter.receivers import Alerting, Grafana, Receiver, TenantGrafana, tenant_group
from exporter.reference import exported_owners
from exporter.secrets import (
    files_read,
    read_secret,
    refuse_query_password,
    unread,
    warnings_collected,
)
from exporter.sources.base import Job
from exporter.sources.sections import SECTIONS

if TYPE_CHECKING:
    # SQLAlchemy is imported where a database is configured: a platform-only exporter is
    # 17 MB smaller without it (docs/performance.md).
    from sqlalchemy import URL

_DRIVERS = {"mysql": "mysql+aiomysql", "mariadb": "mysql+aiomysql", "sqlite": "sqlite+aiosqlite"}


class ConfigError(Exception):
    """The configuration is unusable; lists every problem with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"invalid configuration {self.source}:\n{lines}"


@dataclass(frozen=True)
class MetricSpec:
    """A metric one query feeds."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    value: str
    null_label: str | None = None
    value_label: str | None = None  # with several value columns: the label naming each
    values: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histogram
    states: tuple[str, ...] = ()  # enum
    increment: bool = False  # counter: a durable total the runs add to

    @property
    def columns(self) -> tuple[str, ...]:
        """The value columns: one, or `values`."""
        return self.values or (self.value,)

    @property
    def accumulates(self) -> bool:
        """Whether its samples are durable totals of observations, not the rows as they are."""
        return self.increment or self.type in ("histogram", "summary")


@dataclass(frozen=True)
class QuerySpec:
    """A query with its defaults applied."""

    name: str
    sql: str
    interval: float
    timeout: float
    max_series: int
    metrics: tuple[MetricSpec, ...]
    stale_after: float | None = None
    min_rows: int = 0
    schedule: str | None = None  # crontab (UTC); `interval` is then its longest gap
    # One execution per set (bound over the tenant's params); () runs once.
    parameters: tuple[tuple[tuple[str, schema.ParamValue], ...], ...] = ()

    @cached_property
    def accumulates(self) -> bool:
        """Whether any of its metrics keeps durable totals (asked after every run)."""
        return any(m.accumulates for m in self.metrics)


@dataclass(frozen=True)
class DatabaseSpec:
    """A tenant's database; tenants on the same server and credentials share its connections."""

    url: "URL" = field(repr=False)
    max_connections: int
    idle_timeout: float

    @cached_property
    def server_url(self) -> "URL":
        """The URL without the database: MySQL runs select theirs on a shared connection."""
        if not self.is_mysql:
            return self.url
        # URL.set() treats None as "unchanged"; the NamedTuple's _replace really clears it.
        # The default port is written out so `db` and `db:3306` are one server.
        return self.url._replace(database=None, port=self.url.port or 3306)

    @property
    def is_mysql(self) -> bool:
        """Whether this is a MySQL/MariaDB server (SQLite files are their own server)."""
        return self.url.get_backend_name() == "mysql"

    @cached_property
    def database(self) -> str | None:
        """The database a run selects on a shared MySQL connection; None for SQLite."""
        return self.url.database if self.is_mysql else None

    @cached_property
    def pool_key(self) -> str:
        """Identity of the shared connections, password included; rendered once."""
        rendered = self.server_url.render_as_string(hide_password=False)
        # A DSN without a database cannot un-select another tenant's: its own connections.
        own = "#no-database" if self.is_mysql and not self.url.database else ""
        return f"{rendered}#{self.max_connections}#{self.idle_timeout:g}{own}"

    @property
    def display(self) -> str:
        """The DSN with any password masked, safe for logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def server(self) -> str:
        """The server's DSN with any password masked, safe for logs."""
        return self.server_url.render_as_string(hide_password=True)


@dataclass(frozen=True)
class QueryJob:
    """One (tenant, query) pair: what a SQL job runs."""

    tenant: str
    query: QuerySpec
    database: DatabaseSpec
    params: Mapping[str, schema.ParamValue]
    labels: tuple[tuple[str, str], ...] = ()  # the tenant's own, after `tenant`

    @property
    def key(self) -> tuple[str, str]:
        """Identity of the job and of its snapshot."""
        return (self.tenant, self.query.name)


@dataclass(frozen=True)
class PlatformSpec:
    """A tenant's platform API access, with defaults applied and the secret resolved."""

    tenant: str
    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None
    interval: float
    timeout: float
    stale_after: float | None
    forget_after: float
    request_timeout: float
    page_size: int
    follow_redirects: bool
    max_response_bytes: int
    overlap: float
    lookback: float
    history: float


@dataclass(frozen=True)
class Config:
    """A checked configuration, ready to run."""

    source: str
    tenants: tuple[str, ...]
    jobs: tuple[QueryJob, ...]
    limits: schema.Limits
    warnings: tuple[str, ...] = ()
    platforms: tuple[PlatformSpec, ...] = ()
    digest: str = ""
    alerting: Alerting | None = None
    receivers: Mapping[str, tuple[Receiver, ...]] = field(default_factory=dict)
    grafana: Grafana | None = None
    grafana_orgs: Mapping[str, TenantGrafana] = field(default_factory=dict)
    section_jobs: tuple[Job, ...] = ()  # jobs of the source kinds that own a tenant key
    raw: str = ""  # the file's text, re-read with each set of discovered tenants
    discovery: schema.TenantDiscovery | None = None
    discovery_url: "URL | None" = field(default=None, repr=False)
    queries: tuple[schema.Query, ...] = ()
    discovered: tuple[str, ...] = ()  # ids of the tenants that came from discovery
    shadowed: tuple[str, ...] = ()  # discovered ids a static tenant overrides
    secret_files: tuple[Path, ...] = ()  # read while loading: a change reloads (secretwatch)


def load_config(
    path: Path, discovered: Sequence[Mapping[str, Any]] = (), *, secrets: bool = True
) -> Config:
    """Read, validate and resolve the configuration file at `path` (plus discovered tenants).

    `secrets=False` checks everything but leaves passwords and client secrets unread, for
    rendering the configuration of the tools around the exporter.
    """
    if not secrets:
        with unread():
            return load_config(path, discovered)
    source = str(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["file not found; pass --config or set COCKPIT_CONFIG"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read file: {exc}"]) from None
    return parse_config(raw, source, discovered)


def parse_config(raw: str, source: str, discovered: Sequence[Mapping[str, Any]] = ()) -> Config:
    """Validate configuration text plus discovered tenants; `source` names it in errors."""
    document = _parse_yaml(raw, source)
    static, added, shadowed = _merge(document, discovered)
    root = config_model()
    try:
        model = root.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(source, list(pydantic_problems(exc, root))) from None
    problems = list(_cross_checks(model))
    warnings: list[str] = []
    with warnings_collected() as about_secrets, files_read() as secret_files:
        databases = _resolve_databases(model, problems, warnings)
        platforms = _resolve_platforms(model, problems)
        section_jobs = _section_jobs(model, problems)
        discovery_url = _discovery_url(model, problems, warnings)
    warnings += about_secrets
    problems += _family_owners(model, section_jobs)
    if problems:
        if added:
            problems.append(f"tenants[{static}] and later come from tenant_discovery")
        raise ConfigError(source, problems)
    digest = hashlib.sha256(raw.encode())
    for entry in added:
        digest.update(repr(sorted(entry.items())).encode())
    return Config(
        source=source,
        tenants=tuple(tenant.id for tenant in model.tenants),
        jobs=tuple(_jobs(model, databases)),
        limits=model.limits,
        warnings=tuple(warnings),
        platforms=tuple(platforms),
        digest=digest.hexdigest(),
        alerting=model.alerting,
        receivers={t.id: tuple(t.receivers) for t in model.tenants},
        grafana=model.grafana,
        grafana_orgs={t.id: t.grafana for t in model.tenants if t.grafana is not None},
        section_jobs=tuple(section_jobs),
        raw=raw,
        discovery=model.tenant_discovery,
        discovery_url=discovery_url,
        queries=tuple(model.queries),
        discovered=tuple(str(entry["id"]) for entry in added),
        shadowed=shadowed,
        secret_files=tuple(sorted(secret_files)),
    )


def _merge(
    document: dict[str, Any], discovered: Sequence[Mapping[str, Any]]
) -> tuple[int, list[Mapping[str, Any]], tuple[str, ...]]:
    """Append discovered tenants after the static ones; a static id wins."""
    static = document.get("tenants")
    if not isinstance(static, list | None):
        return 0, [], ()  # validation names the problem
    if not discovered:
        return len(static or ()), [], ()
    ids = {t.get("id") for t in static or () if isinstance(t, dict)}
    added = [entry for entry in discovered if entry["id"] not in ids]
    shadowed = tuple(sorted(str(e["id"]) for e in discovered if e["id"] in ids))
    document["tenants"] = [*(static or ()), *added]
    return len(static or ()), added, shadowed


def _discovery_url(
    model: schema.ConfigFile, problems: list[str], warnings: list[str]
) -> "URL | None":
    spec = model.tenant_discovery
    if spec is None:
        return None
    try:
        return _database(spec, model.defaults, {}, "tenant_discovery", warnings).url
    except ValueError as exc:
        problems.append(str(exc))
        return None


def tenant_model() -> type[BaseModel]:
    """The model of one tenant entry, source kinds' keys included."""
    annotation = config_model().model_fields["tenants"].annotation
    (tenant,) = get_args(annotation)
    model: type[BaseModel] = tenant
    return model


@cache
def config_model() -> type[schema.ConfigFile]:
    """The file's model: the fixed sections plus each source kind's tenant key."""
    keys: dict[str, Any] = {k: (s.annotation | None, None) for k, s in SECTIONS.items()}
    tenant = create_model("Tenant", __base__=schema.Tenant, **keys)
    tenants: Any = (list[tenant], Field(default_factory=list))
    return create_model("ConfigFile", __base__=schema.ConfigFile, tenants=tenants)


def _section_jobs(model: schema.ConfigFile, problems: list[str]) -> list[Job]:
    jobs: list[Job] = []
    for key, section in SECTIONS.items():
        for ti, tenant in enumerate(model.tenants):
            value = getattr(tenant, key, None)
            if value is None:
                continue
            try:
                jobs += section.jobs(tenant.id, value, model, f"tenants[{ti}].{key}")
            except ValueError as exc:
                problems.append(str(exc))
    return jobs


def _family_owners(model: schema.ConfigFile, section_jobs: list[Job]) -> Iterator[str]:
    """A metric name one source kind exports may not come from another (duplicate series)."""
    owners = exported_owners() | {
        m.name: "the sql queries" for q in model.queries for m in q.metrics
    }
    for key, section in SECTIONS.items():
        jobs = [j for j in section_jobs if j.kind == key]
        for family in section.families(jobs):
            owner = owners.setdefault(family.name, f"the {key} source")
            if owner != f"the {key} source":
                yield f"{key}: metric {family.name!r} is also exported by {owner}"


def _parse_yaml(raw: str, source: str) -> Any:
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [yaml_problem(exc)]) from None
    if not isinstance(document, dict):
        raise ConfigError(source, ["the file must be a mapping with a `tenants` key"])
    return document


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the file's text (a file may hold secrets).

    PyYAML's own message quotes the offending line, alias or escape: only its position and
    its problem, quotes blanked, are kept.
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML ({type(exc).__name__})"
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = _QUOTED.sub("…", exc.problem or type(exc).__name__)
    return f"{where}invalid YAML: {problem}"


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def format_location(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as `tenants[1].mysql.dsn`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def pydantic_problems(exc: ValidationError, root: type[BaseModel]) -> Iterator[str]:
    """One `location: message` line per validation error, unknown keys with the allowed ones."""
    for error in exc.errors(include_input=False, include_url=False):
        # Union members and Annotated validators add their own names to the location.
        loc = tuple(p for p in error["loc"] if p not in _NOISE_LOC)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(allowed_keys(root, loc[:-1]))
            message = f"unknown key; allowed here: {allowed}"
        yield f"{format_location(loc)}: {message}"


def allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys a section accepts, found by walking the schema along `loc`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = _by_key(current)
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
        if current is None:
            return []
    return sorted(_by_key(current))


def _by_key(model: Any) -> dict[str, Any]:
    """A model's fields by the key written in YAML (the alias where there is one)."""
    fields = getattr(model, "model_fields", {})
    return {(info.alias or name): info for name, info in fields.items()}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside `X`, `X | None`, `list[X]` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


_NOISE_LOC = frozenset({"str", "int", "float", "bool", "function-after[check(), str]"})


def _cross_checks(model: schema.ConfigFile) -> Iterator[str]:
    if not model.tenants and model.tenant_discovery is None:
        yield "tenants: list at least one tenant, or add tenant_discovery"
    yield from _duplicates([t.id for t in model.tenants], "tenants", "id", "tenant id")
    yield from _duplicates([q.name for q in model.queries], "queries", "name", "query name")
    with_db = {t.id for t in model.tenants if t.mysql is not None}
    known = {t.id for t in model.tenants}
    for qi, query in enumerate(model.queries):
        for ti, tenant_id in enumerate(query.tenants or ()):
            if tenant_id not in known:
                yield f"queries[{qi}].tenants[{ti}]: unknown tenant {tenant_id!r}"
            elif tenant_id not in with_db:
                yield f"queries[{qi}].tenants[{ti}]: tenant {tenant_id!r} has no mysql section"
        timeout = query.timeout or model.defaults.timeout
        if timeout > query.cadence(model.defaults):
            yield (
                f"queries[{qi}].timeout: timeout ({timeout:g}s) is longer than the interval; "
                "shorten the timeout or lengthen the interval"
            )
        try:
            stale_after(query.stale_after, query.cadence(model.defaults), f"queries[{qi}]")
        except ValueError as exc:
            yield str(exc)
        yield from _parameter_checks(model, qi, query)
        yield from _tenant_label_checks(model, qi, query)
    yield from _metric_clashes(model.queries)
    yield from _alerting_checks(model)
    yield from _grafana_checks(model)


def _alerting_checks(model: schema.ConfigFile) -> Iterator[str]:
    receivers = [(f"tenants[{i}].receivers", t.receivers) for i, t in enumerate(model.tenants)]
    if model.alerting is not None:
        receivers.append(("alerting.operators", model.alerting.operators))
    has_email = any(r.email for _, group in receivers for r in group)
    if has_email and (model.alerting is None or model.alerting.smtp is None):
        yield "alerting.smtp: email receivers need alerting.smtp (smarthost and from)"
    if any(group for where, group in receivers if where.startswith("tenants")) and (
        model.alerting is None
    ):
        yield "alerting: tenants have receivers, so alerting.operators is needed for the rest"


def _grafana_checks(model: schema.ConfigFile) -> Iterator[str]:
    yield from _org_checks(model)
    yield from _group_checks(model)


def _group_checks(model: schema.ConfigFile) -> Iterator[str]:
    """One identity-provider group per org, the operators' org included.

    A shared group would map its users into both orgs: org_mapping applies every match.
    """
    default = Grafana.model_fields["operators_group"].default
    operators = model.grafana.operators_group if model.grafana is not None else default
    owners = {operators: "grafana.operators_group"}
    for index, tenant in enumerate(model.tenants):
        if tenant.grafana is None:
            continue
        group = tenant_group(tenant.id, tenant.grafana)
        how = "" if tenant.grafana.group else f" (the default for tenant id {tenant.id!r})"
        owner = owners.setdefault(group, f"tenants[{index}].grafana.group")
        if owner != f"tenants[{index}].grafana.group":
            yield (
                f"tenants[{index}].grafana.group: group {group!r}{how} is also {owner}'s;"
                " each org needs a group of its own (set grafana.group)"
            )


def _org_checks(model: schema.ConfigFile) -> Iterator[str]:
    owners: dict[int, int] = {}
    landing = model.grafana.landing_org_id if model.grafana is not None else None
    for index, tenant in enumerate(model.tenants):
        if tenant.grafana is None:
            continue
        org = tenant.grafana.org_id
        if org == landing:
            yield (
                f"tenants[{index}].grafana.org_id: org {org} is grafana.landing_org_id, the"
                " empty org for users no mapping matches"
            )
        if org in owners:
            yield (
                f"tenants[{index}].grafana.org_id: org {org} is already tenants[{owners[org]}]'s;"
                " each tenant needs its own org"
            )
        owners.setdefault(org, index)


def _duplicates(values: list[str], section: str, key: str, what: str) -> Iterator[str]:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            first = f"{section}[{seen[value]}]"
            yield f"{section}[{index}].{key}: duplicate {what} {value!r} (first at {first})"
        seen.setdefault(value, index)


def _parameter_checks(model: schema.ConfigFile, qi: int, query: schema.Query) -> Iterator[str]:
    from sqlalchemy import text  # noqa: PLC0415 - only SQL queries need it (see TYPE_CHECKING)

    try:
        needed = set(text(query.sql)._bindparams)
    except Exception as exc:
        yield f"queries[{qi}].sql: cannot parse parameters: {exc}"
        return
    sets = query.parameters or [{}]
    for ti, tenant in enumerate(model.tenants):
        if tenant.mysql is None or (query.tenants is not None and tenant.id not in query.tenants):
            continue
        missing = set().union(*(needed - set(tenant.params) - set(s) for s in sets))
        for name in sorted(missing):
            yield (
                f"queries[{qi}].sql: parameter :{name} is not set for tenant {tenant.id!r}; "
                f"add it to tenants[{ti}].params or to every set of queries[{qi}].parameters"
            )


def _tenant_label_checks(model: schema.ConfigFile, qi: int, query: schema.Query) -> Iterator[str]:
    """A tenant's own labels must not be a label its queries' series already have."""
    taken: set[str] = set()
    for metric in query.metrics:
        taken |= {*metric.labels, metric.value_label or "", metric.name, "le"}
    for ti, tenant in enumerate(model.tenants):
        if query.tenants is not None and tenant.id not in query.tenants:
            continue
        for name in sorted(set(tenant.labels) & taken):
            yield (
                f"tenants[{ti}].labels.{name}: queries[{qi}] ({query.name}) has a label"
                f" {name!r} already; rename one of them"
            )


def _metric_clashes(queries: list[schema.Query]) -> Iterator[str]:
    first: dict[str, tuple[str, schema.Metric]] = {}
    owned = exported_owners()
    for qi, query in enumerate(queries):
        in_query: set[str] = set()
        for mi, metric in enumerate(query.metrics):
            where = f"queries[{qi}].metrics[{mi}].name"
            if metric.name in owned:
                yield (
                    f"{where}: metric {metric.name!r} is exported by {owned[metric.name]};"
                    " one name has one owner, pick another name"
                )
            if metric.name in in_query:
                yield f"{where}: metric {metric.name!r} appears twice in this query"
            in_query.add(metric.name)
            if metric.name not in first:
                first[metric.name] = (f"queries[{qi}]", metric)
                continue
            origin, other = first[metric.name]
            differ = [k for k in ("type", "help", "labels", "value_label", "buckets", "states")
                      if getattr(other, k) != getattr(metric, k)]  # fmt: skip
            if differ:
                yield (
                    f"{where}: metric {metric.name!r} is also defined in {origin} with a "
                    f"different {' and '.join(differ)}; queries feeding one metric must "
                    "declare the same type, help and labels"
                )


def _resolve_databases(
    model: schema.ConfigFile, problems: list[str], warnings: list[str]
) -> dict[str, DatabaseSpec]:
    databases: dict[str, DatabaseSpec] = {}
    for ti, tenant in enumerate(model.tenants):
        if tenant.mysql is None:
            continue
        where = f"tenants[{ti}].mysql"
        try:
            databases[tenant.id] = _database(
                tenant.mysql, model.defaults, model.servers, where, warnings
            )
        except ValueError as exc:
            problems.append(str(exc))
    return databases


def _database(
    db: schema.Database,
    defaults: schema.Defaults,
    servers: Mapping[str, schema.Server],
    where: str,
    warnings: list[str],
) -> DatabaseSpec:
    from sqlalchemy import make_url  # noqa: PLC0415 - only databases need it
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        url = make_url(db.dsn)
    except (ArgumentError, ValueError):
        # The parser's own message echoes the DSN, which may hold a password.
        raise ValueError(f"{where}.dsn: cannot parse the DSN (check host:port)") from None
    refuse_query_password(url.query, f"{where}.dsn")
    url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    password = read_secret(db.password_file, db.password_env, where, "password")
    if url.password is not None:
        if password is not None:
            raise ValueError(f"{where}.dsn: password given both in the DSN and in {where}")
        warnings.append(f"{where}.dsn: inline password; prefer password_file or password_env")
    elif password is not None:
        url = url.set(password=password)
    override = servers.get(f"{url.host}:{url.port or 3306}") if url.host else None
    return DatabaseSpec(
        url=url,
        max_connections=(override and override.max_connections)
        or defaults.max_connections_per_server,
        idle_timeout=(override and override.idle_timeout) or defaults.idle_timeout,
    )


def _resolve_platforms(model: schema.ConfigFile, problems: list[str]) -> list[PlatformSpec]:
    specs = []
    for ti, tenant in enumerate(model.tenants):
        if tenant.platform is not None:
            try:
                specs.append(_platform(tenant.id, tenant.platform, model, f"tenants[{ti}]"))
            except ValueError as exc:
                problems.append(str(exc))
    return specs


def _platform(
    tenant: str, platform: schema.Platform, model: schema.ConfigFile, where: str
) -> PlatformSpec:
    where, defaults = f"{where}.platform", model.defaults
    interval = platform.interval or defaults.interval
    timeout = platform.timeout or defaults.timeout
    if timeout > interval:
        raise ValueError(f"{where}.timeout: timeout ({timeout:g}s) is longer than the interval")
    secret = read_secret(
        platform.client_secret_file, platform.client_secret_env, where, "client_secret"
    )
    return PlatformSpec(
        tenant=tenant,
        base_url=platform.base_url,
        token_url=platform.token_url,
        client_id=platform.client_id,
        client_secret=secret or "",
        scope=platform.scope,
        interval=interval,
        timeout=timeout,
        stale_after=stale_after(platform.stale_after, interval, where),
        forget_after=platform.forget_after,
        request_timeout=min(platform.request_timeout, timeout),
        page_size=platform.page_size,
        follow_redirects=platform.follow_redirects == "same_origin",
        max_response_bytes=model.limits.max_response_bytes,
        overlap=platform.overlap,
        lookback=platform.lookback,
        history=platform.history,
    )


def _jobs(model: schema.ConfigFile, databases: dict[str, DatabaseSpec]) -> Iterator[QueryJob]:
    params = {tenant.id: tenant.params for tenant in model.tenants}
    labels = {tenant.id: tuple(sorted(tenant.labels.items())) for tenant in model.tenants}
    for query in model.queries:
        spec = _query_spec(query, model.defaults)
        for tenant_id in query.tenants or [t.id for t in model.tenants]:
            if tenant_id in databases:
                database = databases[tenant_id]
                yield QueryJob(tenant_id, spec, database, params[tenant_id], labels[tenant_id])


def _query_spec(query: schema.Query, defaults: schema.Defaults) -> QuerySpec:
    metrics = tuple(
        MetricSpec(
            m.name,
            m.type,
            m.help,
            tuple(m.labels),
            m.value or (m.values or [""])[0],
            m.null_label,
            m.value_label,
            tuple(m.values or ()),
            tuple(m.buckets or ()),
            tuple(m.states or ()),
            m.increment,
        )
        for m in query.metrics
    )
    return QuerySpec(
        name=query.name,
        sql=query.sql,
        interval=query.cadence(defaults),
        timeout=query.timeout or defaults.timeout,
        max_series=query.max_series or defaults.max_series,
        metrics=metrics,
        stale_after=query.stale_after,
        min_rows=query.min_rows,
        schedule=query.schedule,
        parameters=tuple(tuple(sorted(p.items())) for p in query.parameters or ()),
    )
