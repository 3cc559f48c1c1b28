"""The cockpit's dashboards: for each, its panels, their queries, units and thresholds."""

from exporter.alertrules import RuleSettings
from exporter.grafana.model import Board, Panel, Query, Steps, Variable

# The tenant variable is multi-select: operators compare tenants side by side.
T = '{tenant=~"$tenant"}'
RATE = "[$__rate_interval]"
ZERO_IS_GOOD: Steps = ((None, "green"), (1, "red"))


FAILED = 'status=~"failed|timed_out"'
PLATFORM = '{tenant=~"$tenant",source="platform"}'
UNREACHABLE = "platform unreachable: see Exporter health"
NOTHING_FIRING = "no alert is firing"


def reachable(expr: str) -> str:
    """`expr` only while every selected tenant's platform collection works.

    Platform series vanish during an outage; a stat would then read a stale or made-up 0.
    With this it reads nothing, and the panel's no-value text says why.
    """
    return f"({expr}) and on () (min(cockpit_collection_success{PLATFORM}) == 1)"


def named(expr: str, kind: str) -> str:
    """`expr` (by tenant and `<kind>_id`) with the `name` of its info series as a label.

    Series carry ids, names only the info series; `topk` keeps one info series per id, so a
    rename seen by one replica before the other never makes the join ambiguous.
    """
    key = f"{kind}_id"
    info = f'cockpit_{kind}_info{{tenant=~"$tenant"}}'
    return f"{expr} * on (tenant, {key}) group_left (name) topk by (tenant, {key}) (1, {info})"


def ratio(failed: str, every: str) -> str:
    """The ratio failed / every, and 0 rather than NaN when nothing finished (0/0)."""
    return f"(({failed}) / ({every}) >= 0) or vector(0)"


RUN_FAILURES = ratio(
    f'sum(rate(cockpit_runs_finished_total{{tenant=~"$tenant",{FAILED}}}{RATE}))',
    f"sum(rate(cockpit_runs_finished_total{T}{RATE}))",
)


def budget_of(s: RuleSettings) -> float:
    """The failure budget, 1 - objective, without float noise (0.01, not 0.010000000000000009)."""
    return round(1 - s.objective, 9)


def budget_left(budget: float) -> str:
    """Share of the 30-day failure budget not spent; the one window not the rate interval."""
    return (
        "1 - ("
        + ratio(
            f'sum(increase(cockpit_runs_finished_total{{tenant=~"$tenant",{FAILED}}}[30d]))',
            f"sum(increase(cockpit_runs_finished_total{T}[30d]))",
        )
        + f") / {budget:g}"
    )


BROKEN_NOW = (
    Panel("Firing alerts", "Alerts firing now for the selected tenants; 0 when all is well.",
          "none", (Query('count(ALERTS{tenant=~"$tenant",alertstate="firing"}) or vector(0)'),),
          kind="stat", thresholds=ZERO_IS_GOOD),
    Panel("What's broken now", "Each firing alert of the selected tenants.", "none", (
        Query('ALERTS{tenant=~"$tenant",alertstate="firing"}',
              may_be_empty=NOTHING_FIRING),), kind="table"),
)  # fmt: skip


def slo(budget: float) -> tuple[Panel, Panel]:
    """Budget left and burn rate per alert window, for an objective of 1 - budget."""
    return (
        Panel("Error budget left (30 days)",
              f"Share of the run failure budget ({budget:.0%} of runs) not yet spent in 30 days.",
              "percentunit", (Query(budget_left(budget)),), kind="stat",
              thresholds=((None, "red"), (0, "orange"), (0.25, "green"))),
        Panel("Burn rate", "How fast failures spend the budget, per alert window (1 = exactly "
              "on budget); the run failure alert pages above 14.4 (1h) and 6 (6h).", "none", tuple(
                  Query(f"(sum(tenant:cockpit_run_failures:ratio_rate{w}{T}) / {budget:g} >= 0)"
                        " or vector(0)", w) for w in ("1h", "6h", "1d", "3d")),
              thresholds=((None, "green"), (6, "orange"), (14.4, "red"))),
    )  # fmt: skip


def overview(s: RuleSettings) -> Board:
    """The tenant overview, its thresholds those of the alerts under settings `s`."""
    budget, alert = budget_of(s), s.thresholds
    panels = slo(budget)
    return Board(
        "cockpit-tenant-overview",
        "Cockpit / Tenant overview",
        "Is this tenant's platform healthy, and if not, where?",
        (
            BROKEN_NOW[0],
            Panel("Agents up", "Agents online or busy, of all enabled agents.", "none", (
                Query(reachable(f"sum(cockpit_agent_up{T}) or vector(0)")),), kind="stat",
                  thresholds=((None, "red"), (1, "green")), no_value=UNREACHABLE),
            Panel("Runs queued", "Runs waiting for an agent.", "none", (
                Query(reachable(f"sum(cockpit_runs_queued{T}) or vector(0)")),), kind="stat",
                  no_value=UNREACHABLE),
            Panel("Oldest queued run", "How long the oldest waiting run has waited; 0 when none "
                  "waits. Red where CockpitRunsStuckInQueue fires.", "s", (
                Query(reachable(f"(time() - min(cockpit_runs_oldest_queued_timestamp_seconds{T}))"
                                " or vector(0)")),), kind="stat",
                  thresholds=((None, "green"), (alert.queued_too_long, "red")),
                  no_value=UNREACHABLE),
            Panel("Late schedules", "Enabled schedules whose next run is overdue by more than "
                  "CockpitScheduleLate allows.", "none", (Query(reachable(
                      f"count((time() - cockpit_schedule_next_run_timestamp_seconds{T}"
                      f" > {alert.schedule_late_after:g})"
                      f" and on (tenant, schedule_id) cockpit_schedule_enabled{T} == 1)"
                      " or vector(0)")),), kind="stat", thresholds=ZERO_IS_GOOD,
                  no_value=UNREACHABLE),
            panels[0],
            BROKEN_NOW[1],
            panels[1],
            Panel("Agents by status", "Agents per pool and status.", "none", (
                Query(f"sum by (pool, status) (cockpit_agents{T})", "{{pool}} {{status}}"),),
                  no_value=UNREACHABLE),
            Panel("Run throughput", "Runs finishing per second, by final status.", "ops", (
                Query(f"sum by (status) (rate(cockpit_runs_finished_total{T}{RATE}))",
                      "{{status}}"),)),
            Panel("Run failure ratio", "Share of finished runs that failed or timed out; 0 when "
                  "no run finished.", "percentunit", (Query(RUN_FAILURES),),
                  thresholds=((None, "green"), (budget, "red"))),
            Panel("SQL query duration", "How long each SQL query of this tenant took last.", "s", (
                Query('cockpit_collection_last_duration_seconds{tenant=~"$tenant",source="sql"}',
                      "{{tenant}} {{query}}"),)),
            Panel("Data freshness", "Seconds since each collection last succeeded.", "s", (
                Query(f"time() - cockpit_collection_last_success_timestamp_seconds{T}",
                      "{{tenant}} {{source}} {{query}}"),)),
        ),
    )  # fmt: skip


P = '{tenant=~"$tenant",pool=~"$pool"}'
AGENTS = Board(
    "cockpit-agents",
    "Cockpit / Agents",
    "Every agent of the tenant: up or not, heartbeats, pools.",
    (
        Panel("Agents", "Each agent's state: 1 up (online or busy), 0 down; a pool links to "
              "its agents alone.", "none", (
            Query(named(f"cockpit_agent_up{P}", "agent"), "{{pool}} {{name}}"),), kind="table",
              thresholds=((None, "red"), (1, "green")), no_value=UNREACHABLE,
              links=(("Only this pool", "/d/cockpit-agents?var-tenant=${__data.fields.tenant}"
                      "&var-pool=${__data.fields.pool}&${__url_time_range}"),)),
        Panel("Agents up per pool", "Agents up per pool over time.", "none", (
            Query(f"sum by (pool) (cockpit_agent_up{P})", "{{pool}}"),), no_value=UNREACHABLE),
        Panel("Heartbeat age", "Seconds since each agent's last heartbeat.", "s", (
            Query(named(f"(time() - cockpit_agent_last_heartbeat_timestamp_seconds{P})", "agent"),
                  "{{name}}"),), no_value=UNREACHABLE),
        Panel("Agent versions", "Agents by version.", "none", (
            Query(f"count by (version) (cockpit_agent_info{P})", "{{version}}"),), kind="table",
              no_value=UNREACHABLE),
    ),
    (Variable("pool", "Pool", 'label_values(cockpit_agent_up{tenant=~"$tenant"}, pool)'),),
)  # fmt: skip

R = '{tenant=~"$tenant",process_id=~"$process"}'
# The process picker shows names and selects ids (Grafana 7.4+: named text and value groups).
PROCESS_PICKER = Variable(
    "process",
    "Process",
    'query_result(cockpit_process_info{tenant=~"$tenant"})',
    regex='/[{,]\\s*name="(?<text>[^"]*)".*[{,]\\s*process_id="(?<value>[^"]*)"/',
)
PROCESSES = Board(
    "cockpit-processes",
    "Cockpit / Processes and schedules",
    "Runs per process and how the schedules fire.",
    (
        Panel("Finished runs by process", "Runs finishing per second, by process and status.",
              "ops", (Query(named(
                  "sum by (tenant, process_id, status) "
                  f"(rate(cockpit_runs_finished_total{R}{RATE}))", "process"),
                  "{{name}} {{status}}"),)),
        Panel("Run duration p95", "95th percentile of run duration per process.", "s", (Query(
            named("histogram_quantile(0.95, sum by (tenant, process_id, le) "
                  f"(rate(cockpit_run_duration_seconds_bucket{R}{RATE})))", "process"),
            "{{name}}", may_be_empty="no run finished in the window"),)),
        Panel("Queued and running", "Runs waiting and executing per process.", "none", (
            Query(named(f"sum by (tenant, process_id) (cockpit_runs_queued{R})", "process"),
                  "queued {{name}}"),
            Query(named(f"sum by (tenant, process_id) (cockpit_runs_running{R})", "process"),
                  "running {{name}}")),
              no_value=UNREACHABLE),
        Panel("Schedules", "Next planned run of each enabled schedule; a process links to "
              "its runs alone.", "dateTimeAsIso", (
            Query(f"cockpit_schedule_next_run_timestamp_seconds{T} * 1000"
                  " * on (tenant, schedule_id) group_left (name, process_id)"
                  " topk by (tenant, schedule_id) (1, cockpit_schedule_info"
                  '{tenant=~"$tenant",process_id=~"$process"})', "{{name}}"),),
              kind="table", no_value=UNREACHABLE,
              links=(("Only this process", "/d/cockpit-processes?var-tenant="
                      "${__data.fields.tenant}&var-process=${__data.fields.process_id}"
                      "&${__url_time_range}"),)),
        Panel("Processes enabled", "1 for enabled processes.", "none", (
            Query(named(f"cockpit_process_enabled{R}", "process"), "{{name}}"),), kind="table",
              no_value=UNREACHABLE),
    ),
    (PROCESS_PICKER,),
)  # fmt: skip

TO_TENANT = (("Tenant overview", "/d/cockpit-tenant-overview?var-tenant=${__data.fields.tenant}"
              "&${__url_time_range}"),)  # fmt: skip


def fleet(s: RuleSettings) -> Board:
    """The operators' fleet overview, its thresholds those of settings `s`."""
    budget = budget_of(s)
    return Board(
        "cockpit-fleet",
        "Cockpit / Fleet overview",
        "For operators: every tenant at once; a tenant's row links to its dashboards.",
        (
            Panel("Tenant count", "Tenants with collection jobs.", "none", (
                Query("count(count by (tenant) (cockpit_collection_interval_seconds))"),),
                  kind="stat"),
            Panel("Blind tenants", "Tenants whose platform collection fails entirely "
                  "(CockpitTenantBlind once it lasts).", "none", (Query(
                      'count(max by (tenant) (cockpit_collection_success{source="platform"}) == 0)'
                      " or vector(0)"),), kind="stat", thresholds=ZERO_IS_GOOD),
            Panel("Tenants with failing jobs", "Tenants where at least one job's last run "
                  "failed.", "none", (Query(
                      "count(min by (tenant) (cockpit_collection_success) == 0) or vector(0)"),),
                  kind="stat", thresholds=ZERO_IS_GOOD),
            Panel("Critical alerts firing", "Critical alerts firing across all tenants.", "none", (
                Query('count(ALERTS{alertstate="firing",severity="critical"}) or vector(0)'),),
                  kind="stat", thresholds=ZERO_IS_GOOD),
            Panel("Tenants", "One row per tenant: collection health (1 all jobs ok), oldest data "
                  "age, blind (1), agents up of enabled, run failure ratio, firing alerts.",
                  "none", (
                      Query("min by (tenant) (cockpit_collection_success)"),
                      Query("max by (tenant) (time() - "
                            "cockpit_collection_last_success_timestamp_seconds)"),
                      Query('1 - max by (tenant) (cockpit_collection_success{source="platform"})'),
                      Query("sum by (tenant) (cockpit_agent_up)"),
                      Query("sum by (tenant) (cockpit_agent_enabled)"),
                      Query(f'sum by (tenant) (rate(cockpit_runs_finished_total{{{FAILED}}}{RATE}))'
                            f" / sum by (tenant) (rate(cockpit_runs_finished_total{RATE})) >= 0",
                            may_be_empty="no run finished in the window"),
                      Query('count by (tenant) (ALERTS{alertstate="firing"})',
                            may_be_empty=NOTHING_FIRING),
                  ), kind="table", links=TO_TENANT,
                  columns=("collection ok", "data age (s)", "blind", "agents up", "agents enabled",
                           "run failure ratio", "alerts firing")),
            Panel("Firing alerts by tenant and severity", "Alerts firing over time.", "none", (
                Query('count by (tenant, severity) (ALERTS{alertstate="firing"})',
                      "{{tenant}} {{severity}}", may_be_empty=NOTHING_FIRING),)),
            Panel("Run failure ratio by tenant", "Share of finished runs that failed or timed "
                  "out, per tenant.", "percentunit", (Query(
                      f'sum by (tenant) (rate(cockpit_runs_finished_total{{{FAILED}}}{RATE}))'
                      f" / sum by (tenant) (rate(cockpit_runs_finished_total{RATE})) >= 0",
                      "{{tenant}}", may_be_empty="no run finished in the window"),),
                  thresholds=((None, "green"), (budget, "red"))),
        ),
        operators_only=True,
    )  # fmt: skip


HEALTH = Board(
    "cockpit-exporter-health",
    "Cockpit / Exporter health",
    "For the operators of the exporter: is collection working for this tenant?",
    (
        Panel("Collection success", "1 if the last run of each job succeeded.", "none", (
            Query(f"cockpit_collection_success{T}", "{{source}} {{query}}"),)),
        Panel("Collection duration", "Duration of the last run of each job.", "s", (
            Query(f"cockpit_collection_last_duration_seconds{T}", "{{source}} {{query}}"),)),
        Panel("Collection time share", "Seconds spent collecting per second, by job: where "
              "the exporter's time goes.", "percentunit", (
            Query(f"sum by (source, query) (rate(cockpit_collection_seconds_total{T}{RATE}))",
                  "{{source}} {{query}}"),)),
        Panel("Errors by reason", "Failed runs per second by reason.", "ops", (
            Query(f"sum by (source, reason) (rate(cockpit_collection_errors_total{T}{RATE}))",
                  "{{source}} {{reason}}"),)),
        Panel("API requests by outcome", "Platform API requests per second by outcome class "
              "(error: no response).", "reqps", (Query(
                  f"sum by (query, class) (rate(cockpit_platform_requests_total{T}{RATE}))",
                  "{{query}} {{class}}"),)),
        Panel("API latency p95", "95th percentile of platform API request durations.", "s", (
            Query("histogram_quantile(0.95, sum by (query, le) "
                  f"(rate(cockpit_platform_request_duration_seconds_bucket{T}{RATE})))",
                  "{{query}}", may_be_empty="no request in the window"),)),
        Panel("API retries", "Platform API requests retried per second.", "ops", (
            Query(f"sum by (query) (rate(cockpit_platform_retries_total{T}{RATE}))",
                  "{{query}}"),)),
        Panel("Token refreshes", "Access tokens fetched per second.", "ops", (
            Query(f"rate(cockpit_platform_token_refreshes_total{T}{RATE})"),)),
        Panel("Runs per job", "Collection runs per second of each job, failed or not.", "ops", (
            Query(f"rate(cockpit_collection_runs_total{T}{RATE})", "{{source}} {{query}}"),)),
        Panel("Run duration p95 by source kind", "95th percentile of run durations, all "
              "tenants; each dot is a recent run's trace (exemplar), opened in the traces "
              "datasource.", "s", (Query(
                  "histogram_quantile(0.95, sum by (source, le) "
                  f"(rate(cockpit_collection_duration_seconds_bucket{RATE})))", "{{source}}",
                  exemplars=True),), operators_only=True),
    ),
)  # fmt: skip


def boards(s: RuleSettings) -> tuple[Board, ...]:
    """Every dashboard, with the objective and alert thresholds of settings `s`."""
    return (fleet(s), overview(s), AGENTS, PROCESSES, HEALTH)


# As the committed JSON and `render dashboards`: the alerts' defaults.
BOARDS = boards(RuleSettings())
