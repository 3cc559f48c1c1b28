"""The exporter's own metrics about each job's collection runs."""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter import __version__, buildinfo
from exporter.errors import REASONS
from exporter.exposition import Family, escape_label_value, format_value, label_block
from exporter.store import Snapshot

SUCCESS = Family(
    "cockpit_collection_success",
    "gauge",
    "Whether the last collection run of this tenant's query succeeded (1) or failed (0);"
    " absent before the job's first run.",
)
LAST_DURATION = Family(
    "cockpit_collection_last_duration_seconds", "gauge", "Duration of the last collection run."
)
SECONDS = Family(
    "cockpit_collection_seconds_total",
    "counter",
    "Time spent collecting, waiting for a connection included; rate() is the share of a second.",
)
LAST_SUCCESS = Family(
    "cockpit_collection_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful collection run, kept across restarts; absent if none.",
)
FAILING_SINCE = Family(
    "cockpit_collection_failing_since_timestamp_seconds",
    "gauge",
    "Unix time of the first failed run since the last success, kept across restarts;"
    " absent while the last run succeeded.",
)
INTERVAL = Family(
    "cockpit_collection_interval_seconds",
    "gauge",
    "Configured interval between collection runs; staleness alerts use a multiple of it.",
)
ERRORS = Family(
    "cockpit_collection_errors_total", "counter", "Failed collection runs by reason, from zero."
)
RUNS = Family("cockpit_collection_runs_total", "counter", "Collection runs, failed or not.")
SERIES = Family("cockpit_collection_series", "gauge", "Series exported by the last successful run.")
DROPPED = Family(
    "cockpit_collection_series_dropped_total",
    "counter",
    "Series dropped because the query exceeded its max_series limit.",
)
NULLS = Family(
    "cockpit_collection_null_values_total",
    "counter",
    "Rows skipped because the value or a label was NULL (unless the metric sets null_label).",
)
DUPLICATES = Family(
    "cockpit_collection_duplicate_series_total",
    "counter",
    "Rows skipped because an earlier row of the same run had the same label set.",
)
SAMPLES_DROPPED = Family(
    "cockpit_collection_samples_dropped_total",
    "counter",
    "Samples left out of an otherwise good run, by reason (invalid_value: a negative counter).",
)
DURATION = Family(
    "cockpit_collection_duration_seconds",
    "histogram",
    "Duration of collection runs by source kind, every job of the kind together.",
)
# Runs take from a millisecond (SQLite, a small query) to a timeout of tens of seconds.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BUILD_INFO = Family(
    "cockpit_exporter_build_info", "gauge", "Build information of the running exporter; always 1."
)
RELOAD_SUCCESS = Family(
    "cockpit_exporter_config_last_reload_successful",
    "gauge",
    "Whether the last configuration load (start-up or reload) succeeded.",
)
RELOAD_TIMESTAMP = Family(
    "cockpit_exporter_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful configuration load.",
)
CONFIG_HASH = Family(
    "cockpit_exporter_config_hash",
    "gauge",
    "First 48 bits of the SHA-256 of the configuration in use, as a number.",
)
UNKNOWN_SCOPES = Family(
    "cockpit_exporter_token_unknown_tenants",
    "gauge",
    "Tenant ids a scoped bearer token names that the exporter does not know (yet), by token"
    " name; the token sees each of them once it appears.",
)
TOKEN_EXPIRY = Family(
    "cockpit_exporter_token_expiry_timestamp_seconds",
    "gauge",
    "Unix time a bearer token of the web config stops being accepted, by token name; absent"
    " for tokens that do not expire.",
)
CONFIG_FAMILIES = (RELOAD_SUCCESS, RELOAD_TIMESTAMP, CONFIG_HASH, UNKNOWN_SCOPES, TOKEN_EXPIRY)
JOB_FAMILIES = (
    SUCCESS, LAST_DURATION, SECONDS, LAST_SUCCESS, FAILING_SINCE, INTERVAL, ERRORS, RUNS, SERIES,
    DROPPED, NULLS, DUPLICATES, SAMPLES_DROPPED,
)  # fmt: skip
PROBLEMS = (DROPPED, NULLS, DUPLICATES)
# Every counter is served from zero, so increase() sees a job's first error. Problem
# counters only for sources that skip rows (SQL, http_json); `limits.self_metrics: full`
# adds the series gauge.


@dataclass
class JobStats:
    """Running totals for one job, rendered into every snapshot it produces.

    `success`, `last_success` and `failing_since` are None until known: "has not run yet" is
    absent, never a 0 that reads as 1970. They are durable (see `health`).
    """

    tenant: str
    source: str
    query: str
    runs: int = 0
    success: bool | None = None
    duration: float = 0.0
    seconds: float = 0.0
    last_success: float | None = None
    failing_since: float | None = None
    series: int = 0
    reasons: tuple[str, ...] = REASONS
    errors: dict[str, int] = field(init=False)
    dropped: int = 0
    nulls: int = 0
    duplicates: int = 0
    invalid: int = 0
    last_error: str = ""
    last_run: float = 0.0
    full: bool = False  # the series gauge too (limits.self_metrics)
    interval: float = 0.0  # the job's configured interval, seconds
    problems: bool = True  # whether the source counts skipped rows (nulls, duplicates, dropped)
    _labels: str = field(init=False, repr=False)
    _slow: dict[str, bytes] = field(init=False, repr=False, compare=False, default_factory=dict)
    _slow_key: tuple[object, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        self.errors = dict.fromkeys(self.reasons, 0)
        # Labels are rendered once; each line is the name, these and the value. (Whole line
        # prefixes per family and reason were 2 KB a job, 16 MB at 8,000 jobs.)
        self._labels = label_block(
            [
                ("tenant", escape_label_value(self.tenant)),
                ("source", self.source),
                ("query", escape_label_value(self.query)),
            ]
        )

    def record_success(self, duration: float, series: int) -> None:
        """Note a successful run."""
        self._ran(duration)
        self.success, self.series = True, series
        self.last_success, self.failing_since = self.last_run, None
        self.last_error = ""

    def record_failure(self, duration: float, reason: str, message: str) -> None:
        """Note a failed run; the series count drops to zero with its data."""
        self._ran(duration)
        self.success, self.series = False, 0
        if self.failing_since is None:
            self.failing_since = self.last_run
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = message

    def _ran(self, duration: float) -> None:
        self.runs += 1
        self.duration = duration
        self.seconds += duration
        self.last_run = time.time()

    def health(self) -> dict[str, object]:
        """What a restart restores: the last outcome and its times."""
        return {
            "success": self.success,
            "last_success": self.last_success,
            "failing_since": self.failing_since,
        }

    def restore(self, health: Mapping[str, object]) -> None:
        """Take over a saved `health` (TypeError or ValueError if it is malformed)."""
        success = health["success"]
        if success is not None and not isinstance(success, bool):
            raise TypeError("success must be a boolean")
        self.success = success
        self.last_success = _timestamp(health["last_success"])
        self.failing_since = _timestamp(health["failing_since"])

    def render(self) -> dict[str, bytes]:
        """Sample lines of this job's self-metrics; what is not known yet is absent."""
        slow, fast = self.layers()
        return {**slow, **fast}

    def layers(self) -> tuple[Mapping[str, bytes], dict[str, bytes]]:
        """`render` in two: what changes now and then, and what changes with every run.

        The first is the same object until it changes, and must not be changed by callers.
        """
        labels = self._labels
        # What changes only with a failure, a reload or skipped rows is rendered again only
        # then: after each of thousands of runs, it was most of the rendering.
        slow = (self.success, self.interval, self.failing_since, tuple(self.errors.values()),
                self.dropped, self.nulls, self.duplicates, self.invalid, self.problems,
                self.series if self.full else None)  # fmt: skip
        if slow != self._slow_key:
            self._slow, self._slow_key = self._render_slow(), slow
        bodies: dict[str, bytes] = {}
        seconds = format_value(self.seconds)
        bodies[SECONDS.name] = f"{SECONDS.name}{labels} {seconds}\n".encode()
        bodies[RUNS.name] = f"{RUNS.name}{labels} {self.runs}\n".encode()
        if self.runs:
            duration = format_value(self.duration)
            bodies[LAST_DURATION.name] = f"{LAST_DURATION.name}{labels} {duration}\n".encode()
        if self.last_success is not None:
            moment = format_value(self.last_success)
            bodies[LAST_SUCCESS.name] = f"{LAST_SUCCESS.name}{labels} {moment}\n".encode()
        return self._slow, bodies

    def _render_slow(self) -> dict[str, bytes]:
        labels, open_labels = self._labels, self._labels[:-1]
        reasons = sorted(self.errors.items())
        bodies = {
            INTERVAL.name: f"{INTERVAL.name}{labels} {format_value(self.interval)}\n",
            ERRORS.name: "".join(
                f'{ERRORS.name}{open_labels},reason="{r}"}} {n}\n' for r, n in reasons
            ),
        }
        if self.success is not None:
            bodies[SUCCESS.name] = f"{SUCCESS.name}{labels} {int(self.success)}\n"
        if self.failing_since is not None:
            since = format_value(self.failing_since)
            bodies[FAILING_SINCE.name] = f"{FAILING_SINCE.name}{labels} {since}\n"
        if self.problems:
            for family, count in zip(PROBLEMS, (self.dropped, self.nulls, self.duplicates),
                                     strict=True):  # fmt: skip
                bodies[family.name] = f"{family.name}{labels} {count}\n"
            bodies[SAMPLES_DROPPED.name] = (
                f'{SAMPLES_DROPPED.name}{open_labels},reason="invalid_value"}} {self.invalid}\n'
            )
        if self.full:
            bodies[SERIES.name] = f"{SERIES.name}{labels} {self.series}\n"
        return {name: body.encode() for name, body in bodies.items()}


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a timestamp must be a number")
    return float(value)


def build_info_snapshot() -> Snapshot:
    """The constant build-info series, not tied to a tenant."""
    labels = label_block(
        [
            ("version", __version__),
            ("revision", escape_label_value(buildinfo.revision())),
            ("python_version", escape_label_value(buildinfo.python_version())),
            ("platform", escape_label_value(buildinfo.target())),
        ]
    )
    line = f"{BUILD_INFO.name}{labels} 1\n".encode()
    return Snapshot(tenant=None, bodies={BUILD_INFO.name: line})


def config_snapshot(success: bool, loaded_at: float, digest: str) -> Snapshot:
    """Reload state of the configuration: operators only, it changes with any tenant's config."""
    as_number = int(digest[:12], 16) if digest else 0
    bodies = {
        RELOAD_SUCCESS.name: f"{RELOAD_SUCCESS.name} {int(success)}\n",
        RELOAD_TIMESTAMP.name: f"{RELOAD_TIMESTAMP.name} {format_value(loaded_at)}\n",
        CONFIG_HASH.name: f"{CONFIG_HASH.name} {as_number}\n",
    }
    encoded = {k: v.encode() for k, v in bodies.items()}
    return Snapshot(tenant=None, bodies=encoded, operators_only=True)


def expiry_snapshot(expiries: Mapping[str, float]) -> Snapshot:
    """When each expiring bearer token stops being accepted: operators only."""
    lines = "".join(
        f'{TOKEN_EXPIRY.name}{{token="{escape_label_value(name)}"}} {format_value(moment)}\n'
        for name, moment in sorted(expiries.items())
    )
    bodies = {TOKEN_EXPIRY.name: lines.encode()} if lines else {}
    return Snapshot(tenant=None, bodies=bodies, operators_only=True)


def scopes_snapshot(unknown: Mapping[str, Sequence[str]]) -> Snapshot:
    """Unknown tenant ids per scoped token (0 when all are known): operators only."""
    lines = "".join(
        f'{UNKNOWN_SCOPES.name}{{token="{escape_label_value(name)}"}} {len(ids)}\n'
        for name, ids in sorted(unknown.items())
    )
    bodies = {UNKNOWN_SCOPES.name: lines.encode()} if lines else {}
    return Snapshot(tenant=None, bodies=bodies, operators_only=True)
