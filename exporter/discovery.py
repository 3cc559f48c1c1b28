"""Tenant discovery: a registry query every interval; its rows become tenants.

Rows are turned into tenant entries of the configuration file and merged with the static
ones, so a discovered tenant is exactly a tenant written in YAML, and a changed set is
applied exactly like a reload.
"""

import asyncio
import decimal
import re
import string
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from exporter import schema, spans
from exporter.exposition import Family, format_value
from exporter.store import Snapshot

if TYPE_CHECKING:
    # SQLAlchemy is imported where discovery is configured (17 MB a process without it
    # does not carry): in `_query` and `needed_params`.
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)
TenantEntry = dict[str, Any]
# A MySQL database name as written unquoted; anything else could change the DSN's meaning.
DATABASE_NAME = re.compile(r"[A-Za-z0-9_$-]{1,64}")
REQUIRED = ("id", "database")

SUCCESS = Family(
    "cockpit_exporter_discovery_success",
    "gauge",
    "Whether the last tenant discovery query succeeded (1) or failed (0).",
)
TENANTS = Family(
    "cockpit_exporter_discovery_tenants", "gauge", "Tenants from discovery in the running set."
)
LAST_SUCCESS = Family(
    "cockpit_exporter_discovery_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful tenant discovery; 0 before the first one.",
)
FAILURES = Family(
    "cockpit_exporter_discovery_failures_total",
    "counter",
    "Tenant discovery rounds that failed; the last known tenant set stays in use.",
)
SKIPPED = Family(
    "cockpit_exporter_discovery_rows_skipped_total",
    "counter",
    "Registry rows skipped as invalid (bad id, missing database, duplicate, missing param).",
)
FAMILIES = (SUCCESS, TENANTS, LAST_SUCCESS, FAILURES, SKIPPED)


class DiscoveryError(Exception):
    """The registry could not be read or its answer is unusable as a whole."""


@dataclass
class Outcome:
    """The tenant entries of one registry answer and the rows skipped, with why."""

    tenants: list[TenantEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def tenants_from_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    spec: schema.TenantDiscovery,
    validate: Callable[[TenantEntry], object],
    needed: Callable[[str], set[str]],
) -> Outcome:
    """Tenant entries from registry rows; an invalid row is skipped and named, not fatal."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DiscoveryError(
            f"tenant_discovery.sql: the query must return columns {', '.join(REQUIRED)}"
            f" (missing {', '.join(missing)}; got {', '.join(columns) or 'none'})"
        )
    fields = {name for _, name, _, _ in string.Formatter().parse(spec.mysql.dsn) if name}
    unknown = sorted(fields - set(columns))
    if unknown:
        raise DiscoveryError(
            f"tenant_discovery.mysql.dsn: placeholders {unknown} name no column of the query"
        )
    if len(rows) > spec.max_tenants:
        raise DiscoveryError(
            f"tenant_discovery: the registry returned more rows than max_tenants"
            f" ({spec.max_tenants}); the last known tenants stay in use"
        )
    outcome, seen = Outcome(), dict[str, int]()
    for index, row in enumerate(rows):
        values = dict(zip(columns, row, strict=True))
        where = f"row {index + 1} (id {values['id']!r})"
        try:
            entry = _entry(values, spec, validate, needed)
        except ValueError as exc:
            outcome.skipped.append(f"{where}: {exc}")
            continue
        if entry["id"] in seen:
            outcome.skipped.append(f"{where}: duplicate id, first at row {seen[entry['id']]}")
            continue
        seen[entry["id"]] = index + 1
        outcome.tenants.append(entry)
    return outcome


def _entry(
    values: Mapping[str, object],
    spec: schema.TenantDiscovery,
    validate: Callable[[TenantEntry], object],
    needed: Callable[[str], set[str]],
) -> TenantEntry:
    database = values["database"]
    if not isinstance(database, str) or not DATABASE_NAME.fullmatch(database):
        raise ValueError(f"database {database!r} is not a plain database name")
    params = {k: _param(v) for k, v in values.items() if k not in REQUIRED and v is not None}
    quoted = {k: urllib.parse.quote(str(v), safe="") for k, v in values.items()}
    mysql: TenantEntry = {"dsn": spec.mysql.dsn.format_map(quoted)}
    if spec.mysql.password_file is not None:
        mysql["password_file"] = str(spec.mysql.password_file)
    if spec.mysql.password_env is not None:
        mysql["password_env"] = spec.mysql.password_env
    entry: TenantEntry = {"id": str(values["id"]), "mysql": mysql, "params": params}
    try:
        validate(entry)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None
    lacking = sorted(needed(entry["id"]) - set(params))
    if lacking:
        raise ValueError(f"no column for the query parameters {lacking}")
    return entry


def _param(value: object) -> schema.ParamValue:
    """A registry value as a query parameter (numbers stay numbers)."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass
class Discovery:
    """Runs the registry query on its interval and applies changed tenant sets."""

    spec: schema.TenantDiscovery
    url: Any  # sqlalchemy URL with the secret resolved
    validate: Callable[[TenantEntry], object]
    needed: Callable[[str], set[str]]
    apply: Callable[[list[TenantEntry]], Awaitable[str | None]]
    publish: Callable[[Snapshot], None]
    tenants: list[TenantEntry] = field(default_factory=list)
    success: bool = False
    last_success: float = 0.0
    failures: int = 0
    skipped: int = 0
    last_error: str = ""
    _engine: "AsyncEngine | None" = None
    _task: asyncio.Task[None] | None = None
    _warned: set[str] = field(default_factory=set)
    _applied: bool = False  # the last set handed to `apply` was taken
    # The last answer and what it gave: a registry that has not changed since (the usual
    # case) costs a comparison, not a validation per row (0.5 s a round at 1,000 rows).
    _last: tuple[list[str], list[tuple[object, ...]], Outcome] | None = None

    async def poll(self) -> None:
        """One round: query, build entries, apply them if they changed; never raises."""
        with spans.span("discover tenants") as span:
            try:
                await self._round()
            except Exception as exc:
                # A bug must cost one round, not the discovery loop.
                log.exception("tenant discovery crashed")
                self._fail(f"tenant_discovery: internal error: {type(exc).__name__}")
            span.set_attribute("cockpit.tenants", len(self.tenants))
            if not self.success:
                span.set_status(StatusCode.ERROR, self.last_error)
        self.publish(self.snapshot())

    async def _round(self) -> None:
        try:
            async with asyncio.timeout(self.spec.timeout):
                columns, rows = await self._query()
            outcome = self._outcome(columns, rows)
        except (DiscoveryError, OSError, TimeoutError) as exc:
            self._fail(_message(exc, self.spec.timeout))
            return
        self._skip(outcome.skipped)
        if outcome.tenants != self.tenants or not self._applied:
            problem = await self.apply(outcome.tenants)
            self._applied = problem is None
            if problem is not None:
                self._fail(problem)
                return
            self.tenants = outcome.tenants
        self.success, self.last_success, self.last_error = True, time.time(), ""

    def _outcome(self, columns: list[str], rows: Sequence[Sequence[object]]) -> Outcome:
        """The tenants of this answer, reusing the last round's when the rows are the same."""
        values = [tuple(row) for row in rows]
        if self._last is not None and self._last[:2] == (columns, values):
            return self._last[2]
        outcome = tenants_from_rows(columns, values, self.spec, self.validate, self.needed)
        self._last = (columns, values, outcome)
        return outcome

    async def _query(self) -> tuple[list[str], Sequence[Sequence[object]]]:
        from sqlalchemy import text  # noqa: PLC0415 - see TYPE_CHECKING above
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

        try:
            async with self._connected().connect() as conn:
                # Streamed, and read no further than one row past the limit: a registry that
                # answers millions of rows costs that one row more, not their memory.
                result = await conn.stream(text(self.spec.sql))
                rows = await result.fetchmany(self.spec.max_tenants + 1)
                columns = list(result.keys())
                if len(rows) > self.spec.max_tenants:
                    await conn.invalidate()  # closing would read the rest to drain the cursor
                else:
                    await result.close()
                return columns, rows
        except SQLAlchemyError as exc:
            raise DiscoveryError(_cannot_query(exc)) from None

    def _connected(self) -> "AsyncEngine":
        if self._engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415
            from sqlalchemy.pool import NullPool  # noqa: PLC0415

            from exporter.sources.sql.sessions import read_only  # noqa: PLC0415

            self._engine = read_only(
                create_async_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            )
        return self._engine

    def _fail(self, message: str) -> None:
        self.success, self.last_error = False, message
        self.failures += 1
        log.warning("tenant discovery failed", error=message, tenants_kept=len(self.tenants))

    def _skip(self, problems: list[str]) -> None:
        self.skipped += len(problems)
        if len(self._warned) > 10_000:  # a churning registry must not grow this without end
            self._warned.clear()
        for problem in problems:
            # A bad row stays bad every round: say so once, count it every time.
            if problem not in self._warned:
                self._warned.add(problem)
                log.warning("registry row skipped", problem=problem)

    def start(self) -> None:
        """Poll every interval in the background (the first poll is the caller's)."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.interval)
            await self.poll()

    async def stop(self) -> None:
        """Stop polling and close the registry connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()

    def snapshot(self) -> Snapshot:
        """Operators' series: discovery state, tenants in use, failures and skipped rows."""
        values = (
            (SUCCESS, int(self.success)),
            (TENANTS, len(self.tenants)),
            (LAST_SUCCESS, format_value(self.last_success)),
            (FAILURES, self.failures),
            (SKIPPED, self.skipped),
        )
        # Never a last success of 0 (1970): absent until the first one.
        bodies = {
            f.name: f"{f.name} {v}\n".encode()
            for f, v in values
            if f is not LAST_SUCCESS or self.last_success
        }
        return Snapshot(tenant=None, bodies=bodies, operators_only=True)

    def status(self) -> str:
        """One line for the landing page."""
        if self.success:
            return f"ok: {len(self.tenants)} tenants, {self.skipped} rows skipped so far"
        kept = f"keeping {len(self.tenants)} known tenants"
        return f"failing ({self.failures} failures; {kept}): {self.last_error or 'not run yet'}"


def _message(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"tenant_discovery: the registry did not answer within {timeout:g}s"
    if isinstance(exc, DiscoveryError):
        return str(exc)
    return _cannot_query(exc)


def _cannot_query(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc  # the driver's error, not SQLAlchemy's wrapper
    return f"tenant_discovery: cannot query the registry: {orig}"[:400]


def needed_params(queries: Sequence[schema.Query]) -> Callable[[str], set[str]]:
    """The parameters a tenant's queries bind, for checking registry rows one by one."""
    from sqlalchemy import text  # noqa: PLC0415 - see TYPE_CHECKING above

    per_query = [(q.tenants, set(text(q.sql)._bindparams)) for q in queries]

    def needed(tenant: str) -> set[str]:
        return set().union(*(names for only, names in per_query if only is None or tenant in only))

    return needed
