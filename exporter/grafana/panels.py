"""What a dashboard shows, independent of Grafana's JSON: panels, their queries and units."""

from dataclasses import dataclass, field

T = '{tenant="$tenant"}'
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    """One PromQL target; `may_be_empty` says why no data can be a healthy answer."""

    expr: str
    legend: str = ""
    may_be_empty: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel: `kind` is timeseries, stat or table."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"


@dataclass(frozen=True)
class Board:
    """A dashboard: uid, title, one-line purpose and its panels."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


FAILED = 'status=~"failed|timed_out"'
NO_QUEUE = "no run waits right now"
NO_LATE = "every schedule is on time"

OVERVIEW = Board(
    "cockpit-tenant-overview",
    "Cockpit / Tenant overview",
    "Is this tenant's platform healthy, and if not, where?",
    (
        Panel("Agents up", "Agents online or busy, of all enabled agents.", "none", (
            Query(f"sum(cockpit_agent_up{T})"),), kind="stat"),
        Panel("Agents by status", "Agents per pool and status.", "none", (
            Query(f"sum by (pool, status) (cockpit_agents{T})", "{{pool}} {{status}}"),)),
        Panel("Run throughput", "Runs finishing per second, by final status.", "ops", (
            Query(f"sum by (status) (rate(cockpit_runs_finished_total{T}{RATE}))", "{{status}}"),)),
        Panel("Run failure ratio", "Share of finished runs that failed or timed out.",
              "percentunit", (Query(
                  f'sum(rate(cockpit_runs_finished_total{{tenant="$tenant",{FAILED}}}{RATE}))'
                  f" / sum(rate(cockpit_runs_finished_total{T}{RATE}))",
                  may_be_empty="no run finished in the window"),)),
        Panel("Runs queued", "Runs waiting for an agent.", "none", (
            Query(f"sum(cockpit_runs_queued{T})"),), kind="stat"),
        Panel("Oldest queued run", "How long the oldest waiting run has waited.", "s", (
            Query(f"time() - min(cockpit_runs_oldest_queued_timestamp_seconds{T})",
                  may_be_empty=NO_QUEUE),), kind="stat"),
        Panel("Late schedules", "Enabled schedules whose next run is over 10 minutes overdue.",
              "none", (Query(
                  f"count((time() - cockpit_schedule_next_run_timestamp_seconds{T} > 600)"
                  f" and on (tenant, schedule, process) cockpit_schedule_enabled{T} == 1)",
                  may_be_empty=NO_LATE),), kind="stat"),
        Panel("SQL query duration", "How long each SQL query of this tenant took last.", "s", (
            Query('cockpit_collection_duration_seconds{tenant="$tenant",source="sql"}',
                  "{{query}}"),)),
        Panel("Data freshness", "Seconds since each collection last succeeded.", "s", (
            Query(f"time() - cockpit_collection_last_success_timestamp_seconds{T}",
                  "{{source}} {{query}}"),)),
    ),
)  # fmt: skip

AGENTS = Board(
    "cockpit-agents",
    "Cockpit / Agents",
    "Every agent of the tenant: up or not, heartbeats, pools.",
    (
        Panel("Agents", "Each agent's state: 1 up (online or busy), 0 down.", "none", (
            Query(f"cockpit_agent_up{T}", "{{pool}} {{agent}}"),), kind="table"),
        Panel("Agents up per pool", "Agents up per pool over time.", "none", (
            Query(f"sum by (pool) (cockpit_agent_up{T})", "{{pool}}"),)),
        Panel("Heartbeat age", "Seconds since each agent's last heartbeat.", "s", (
            Query(f"time() - cockpit_agent_last_heartbeat_timestamp_seconds{T}",
                  "{{agent}}"),)),
        Panel("Agent versions", "Agents by version.", "none", (
            Query(f"count by (version) (cockpit_agent_info{T})", "{{version}}"),), kind="table"),
    ),
)  # fmt: skip

PROCESSES = Board(
    "cockpit-processes",
    "Cockpit / Processes and schedules",
    "Runs per process and how the schedules fire.",
    (
        Panel("Finished runs by process", "Runs finishing per second, by process and status.",
              "ops", (Query(
                  f"sum by (process, status) (rate(cockpit_runs_finished_total{T}{RATE}))",
                  "{{process}} {{status}}"),)),
        Panel("Run duration p95", "95th percentile of run duration per process.", "s", (Query(
            "histogram_quantile(0.95, sum by (process, le) "
            f"(rate(cockpit_run_duration_seconds_bucket{T}{RATE})))", "{{process}}",
            may_be_empty="no run finished in the window"),)),
        Panel("Queued and running", "Runs waiting and executing per process.", "none", (
            Query(f"sum by (process) (cockpit_runs_queued{T})", "queued {{process}}"),
            Query(f"sum by (process) (cockpit_runs_running{T})", "running {{process}}"))),
        Panel("Schedules", "Next planned run of each enabled schedule.", "dateTimeAsIso", (
            Query(f"cockpit_schedule_next_run_timestamp_seconds{T} * 1000", "{{schedule}}"),),
              kind="table"),
        Panel("Processes enabled", "1 for enabled processes.", "none", (
            Query(f"cockpit_process_enabled{T}", "{{process}}"),), kind="table"),
    ),
)  # fmt: skip

HEALTH = Board(
    "cockpit-exporter-health",
    "Cockpit / Exporter health",
    "For the operators of the exporter: is collection working for this tenant?",
    (
        Panel("Collection success", "1 if the last run of each job succeeded.", "none", (
            Query(f"cockpit_collection_success{T}", "{{source}} {{query}}"),)),
        Panel("Collection duration", "Duration of the last run of each job.", "s", (
            Query(f"cockpit_collection_duration_seconds{T}", "{{source}} {{query}}"),)),
        Panel("Errors by reason", "Failed runs per second by reason.", "ops", (
            Query(f"sum by (source, reason) (rate(cockpit_collection_errors_total{T}{RATE}))",
                  "{{source}} {{reason}}",
                  may_be_empty="a reason shows once a run has failed for it"),)),
        Panel("API requests by code", "Platform API requests per second by status code.",
              "reqps", (Query(
                  f"sum by (endpoint, code) (rate(cockpit_platform_requests_total{T}{RATE}))",
                  "{{endpoint}} {{code}}"),)),
        Panel("API retries", "Platform API requests retried per second.", "ops", (
            Query(f"sum by (endpoint) (rate(cockpit_platform_retries_total{T}{RATE}))",
                  "{{endpoint}}"),)),
        Panel("Token refreshes", "Access tokens fetched per second.", "ops", (
            Query(f"rate(cockpit_platform_token_refreshes_total{T}{RATE})"),)),
        Panel("Runs per job", "Collection runs per second of each job, failed or not.", "ops", (
            Query(f"rate(cockpit_collection_runs_total{T}{RATE})", "{{source}} {{query}}"),)),
    ),
)  # fmt: skip

BOARDS = (OVERVIEW, AGENTS, PROCESSES, HEALTH)
