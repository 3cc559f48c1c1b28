"""Prometheus recording and alerting rules, with thresholds and the runbook base in one place.

`alerts/cockpit.rules.yml` is this module's output with the defaults (`make rules` writes it,
a test checks it is current); `cockpit-exporter render rules` renders it with other settings.
"""

from dataclasses import dataclass
from typing import Any

from exporter.durations import parse_duration

DEFAULT_RUNBOOKS = "https://github.com/cockpit-exporter/cockpit-exporter/blob/main/docs/runbooks.md"
FAILED = 'status=~"failed|timed_out"'
# (long window, short window, burn-rate factor): the multi-window, multi-burn-rate pairs.
FAST_BURN = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
SLOW_BURN = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Settings:
    """Everything operators may want to tune."""

    runbooks: str = DEFAULT_RUNBOOKS
    job: str = "cockpit"
    run_success_objective: float = 0.95
    stale_after: str = "30m"
    schedule_late_after_seconds: int = 600
    queued_too_long_seconds: int = 1800
    api_error_ratio: float = 0.25
    runs_lag_seconds: int = 900
    pool_offline_for: str = "2m"
    agent_offline_for: str = "10m"


@dataclass(frozen=True)
class Alert:
    """One alert rule; `description` is a template naming tenant and object."""

    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str
    runbook: str

    def render(self, settings: Settings) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{settings.runbooks}#{self.runbook}",
            },
        }


# Names the pool's agents in the page itself: their own alerts are inhibited by this one.
_OFFLINE_AGENTS = (
    "{{ range $i, $agent := query (printf \"cockpit_agent_up{tenant='%s',pool='%s'} == 0\" "
    '$labels.tenant $labels.pool) | sortByLabel "agent" }}{{ if $i }}, {{ end }}'
    "{{ $agent.Labels.agent }}{{ end }}"
)


def _ratio(window: str) -> str:
    return (
        f"sum by (tenant) (rate(cockpit_runs_finished_total{{{FAILED}}}[{window}]))\n"
        f"/\nsum by (tenant) (rate(cockpit_runs_finished_total[{window}]))"
    )


def recording_rules() -> list[dict[str, str]]:
    """Series that dashboards and alerts share."""
    rules = [
        {
            "record": f"tenant:cockpit_run_failures:ratio_rate{window}",
            "expr": _ratio(window),
        }
        for window in WINDOWS
    ]
    rules += [
        {
            "record": "tenant_status:cockpit_runs_finished:rate5m",
            "expr": "sum by (tenant, status) (rate(cockpit_runs_finished_total[5m]))",
        },
        {
            "record": "tenant_pool:cockpit_agents_up:sum",
            "expr": "sum by (tenant, pool) (cockpit_agent_up)",
        },
        {
            "record": "tenant_pool:cockpit_agents_enabled:sum",
            "expr": "sum by (tenant, pool) (cockpit_agent_enabled)",
        },
    ]
    return rules


def _burn(pairs: tuple[tuple[str, str, float], ...], budget: float) -> str:
    clauses = [
        f"(tenant:cockpit_run_failures:ratio_rate{long} > {factor * budget:g}\n"
        f" and tenant:cockpit_run_failures:ratio_rate{short} > {factor * budget:g})"
        for long, short, factor in pairs
    ]
    return "\nor\n".join(clauses)


def alerts(s: Settings) -> list[Alert]:
    """Every alert, with its thresholds from `s`."""
    budget = 1 - s.run_success_objective
    return [
        Alert(
            "CockpitExporterDown",
            f'up{{job="{s.job}"}} == 0',
            "5m",
            "critical",
            "The cockpit exporter cannot be scraped.",
            "Prometheus has not scraped {{ $labels.instance }} for 5 minutes; no tenant's "
            "data is fresh.",
            "exporter-down",
        ),
        Alert(
            "CockpitCollectionFailing",
            "cockpit_collection_success == 0 and cockpit_collection_runs_total > 0",
            "15m",
            "warning",
            "A tenant's data collection keeps failing.",
            "Tenant {{ $labels.tenant }}: {{ $labels.source }} collection "
            "{{ $labels.query }} has failed for 15 minutes.",
            "collection-failing-for-a-tenant",
        ),
        Alert(
            "CockpitDataStale",
            f"time() - cockpit_collection_last_success_timestamp_seconds > "
            f"{_seconds(s.stale_after)}\nand cockpit_collection_last_success_timestamp_seconds > 0",
            "5m",
            "warning",
            "A tenant's data has not been refreshed for a long time.",
            "Tenant {{ $labels.tenant }}: {{ $labels.source }} {{ $labels.query }} last "
            "succeeded {{ $value | humanizeDuration }} ago.",
            "data-stale",
        ),
        Alert(
            "CockpitTenantDiscoveryFailing",
            "cockpit_exporter_discovery_success == 0",
            "10m",
            "warning",
            "Tenant discovery keeps failing; new or removed tenants are not picked up.",
            "{{ $labels.instance }} cannot read its tenant registry; it keeps collecting the "
            "tenants it knew.",
            "tenant-discovery-failing",
        ),
        Alert(
            "CockpitRunsLagging",
            f"cockpit_platform_runs_lag_seconds > {s.runs_lag_seconds}",
            "10m",
            "warning",
            "A tenant's run counts are falling behind the platform.",
            "Tenant {{ $labels.tenant }}: runs are known only up to "
            "{{ $value | humanizeDuration }} ago; run counts and failure ratios lag by that much.",
            "runs-lagging",
        ),
        Alert(
            "CockpitPlatformApiErrors",
            "sum by (tenant, endpoint) (rate(cockpit_platform_requests_total"
            '{code=~"5..|429|error"}[10m]))\n/\nsum by (tenant, endpoint) '
            f"(rate(cockpit_platform_requests_total[10m])) > {s.api_error_ratio:g}",
            "10m",
            "warning",
            "The platform API fails many requests for a tenant.",
            "Tenant {{ $labels.tenant }}: {{ $value | humanizePercentage }} of requests to "
            "{{ $labels.endpoint }} fail (5xx, 429 or no answer).",
            "platform-api-failing-for-a-tenant",
        ),
        Alert(
            "CockpitAgentOffline",
            "cockpit_agent_up == 0\nand on (tenant, pool, agent) cockpit_agent_enabled == 1",
            s.agent_offline_for,
            "warning",
            "An enabled agent is offline.",
            "Tenant {{ $labels.tenant }}: agent {{ $labels.agent }} in pool "
            "{{ $labels.pool }} is offline.",
            "agent-offline",
        ),
        Alert(
            "CockpitAgentPoolOffline",
            "tenant_pool:cockpit_agents_up:sum == 0\n"
            "and on (tenant, pool) tenant_pool:cockpit_agents_enabled:sum > 0",
            s.pool_offline_for,
            "critical",
            "Every agent of a pool is offline.",
            "Tenant {{ $labels.tenant }}: no agent of pool {{ $labels.pool }} is up ("
            + _OFFLINE_AGENTS
            + "); its processes cannot run.",
            "agent-pool-offline",
        ),
        Alert(
            "CockpitRunFailureBudgetBurn",
            _burn(FAST_BURN, budget),
            "2m",
            "critical",
            "Runs fail fast enough to spend the error budget within days.",
            "Tenant {{ $labels.tenant }}: run failure ratio {{ $value | humanizePercentage }} "
            f"against an objective of {s.run_success_objective:.0%} successful runs.",
            "run-failure-ratio-above-objective",
        ),
        Alert(
            "CockpitRunFailureBudgetBurnSlow",
            _burn(SLOW_BURN, budget),
            "1h",
            "warning",
            "Runs fail often enough to spend the error budget within weeks.",
            "Tenant {{ $labels.tenant }}: run failure ratio {{ $value | humanizePercentage }} "
            f"against an objective of {s.run_success_objective:.0%} successful runs.",
            "run-failure-ratio-above-objective",
        ),
        Alert(
            "CockpitScheduleLate",
            f"time() - cockpit_schedule_next_run_timestamp_seconds > "
            f"{s.schedule_late_after_seconds}\n"
            "and on (tenant, schedule, process) cockpit_schedule_enabled == 1",
            "5m",
            "warning",
            "An enabled schedule did not start its run on time.",
            "Tenant {{ $labels.tenant }}: schedule {{ $labels.schedule }} of process "
            "{{ $labels.process }} is {{ $value | humanizeDuration }} late.",
            "schedule-late",
        ),
        Alert(
            "CockpitRunsStuckInQueue",
            f"time() - cockpit_runs_oldest_queued_timestamp_seconds > {s.queued_too_long_seconds}",
            "5m",
            "warning",
            "Runs wait in the queue for a long time.",
            "Tenant {{ $labels.tenant }}: the oldest queued run of process "
            "{{ $labels.process }} has waited {{ $value | humanizeDuration }}.",
            "runs-stuck-in-the-queue",
        ),
    ]


def render_rules(settings: Settings | None = None) -> dict[str, Any]:
    """The rule file as a YAML-ready mapping."""
    s = settings or Settings()
    return {
        "groups": [
            {"name": "cockpit-recording", "rules": recording_rules()},
            {"name": "cockpit-alerts", "rules": [a.render(s) for a in alerts(s)]},
        ]
    }


def _seconds(duration: str) -> int:
    return int(parse_duration(duration))
