"""Prometheus recording and alerting rules, with thresholds and the runbook base in one place.

`alerts/cockpit.rules.yml` is this module's output with the defaults (`make rules` writes it,
a test checks it is current); `cockpit-exporter render rules --config F` renders it with the
config's `alerting` settings.

Every alert carries `owner`: `operator` for problems of the exporter and its collection (the
operators can fix them), `tenant` for the tenant's platform (the tenant can). Operator alerts
that change what a tenant sees (its data is stale, it is blind) also carry `inform: tenant`,
and Alertmanager's routing (render/alertmanager.py) sends those to the tenant as well.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from exporter.alertrules import RuleSettings
from exporter.durations import parse_duration

FAILED = 'status=~"failed|timed_out"'
# (long window, short window, burn-rate factor, severity, for): the multi-window,
# multi-burn-rate pairs of the SRE workbook, as pyrra and sloth render them.
BURNS = (
    ("1h", "5m", 14.4, "critical", "2m"),
    ("6h", "30m", 6.0, "critical", "15m"),
    ("1d", "2h", 3.0, "warning", "1h"),
    ("3d", "6h", 1.0, "warning", "3h"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
LONG_WINDOWS = tuple(dict.fromkeys(long for long, *_ in BURNS))
# Platform collection failing for the tenant: nothing the platform reports is current.
BLIND = 'max by (tenant) (cockpit_collection_success{source="platform"}) == 0'
# Since when every platform job of the tenant fails: the last of them to start failing.
BLIND_SINCE = (
    'max by (tenant) (cockpit_collection_failing_since_timestamp_seconds{source="platform"})'
)
# The tenant's agents cannot be read (on every replica): its agent series are gone.
AGENTS_UNREADABLE = (
    'max by (tenant) (cockpit_collection_success{source="platform",query="agents"}) == 0'
)


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
    owner: str = "tenant"
    inform_tenant: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    keep_firing_for: str = ""  # through an exporter restart: its series gone, then back

    def render(self, settings: RuleSettings) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        labels = {"severity": self.severity, "owner": self.owner, **self.labels}
        if self.inform_tenant:
            labels["inform"] = "tenant"
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr, "for": self.duration}
        if self.keep_firing_for:
            rule["keep_firing_for"] = self.keep_firing_for
        return rule | {
            "labels": labels,
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{settings.runbooks}#{self.runbook}",
            },
        }


def _offline_agents() -> str:
    """Names the pool's agents in the page itself: their own alerts are inhibited by this one.

    Once each, however many replicas report them.
    """
    names = (
        "max by (name) (cockpit_agent_info{tenant='%s',pool='%s'}"
        " and on (tenant, agent_id) cockpit_agent_up == 0)"
    )
    return (
        f'{{{{ range $i, $agent := query (printf "{names}" '
        '$labels.tenant $labels.pool) | sortByLabel "name" }}'
        "{{ if $i }}, {{ end }}{{ $agent.Labels.name }}{{ end }}"
    )


def name_of(kind: str) -> str:
    """Template text: the name of the alert's process, agent or schedule, else its id.

    Series carry ids (names change); the name is looked up in the info series, as last seen
    within the hour, so a page still says it while the platform cannot be read.
    """
    key = f"{kind}_id"
    info = f"max by (name) (last_over_time(cockpit_{kind}_info{{tenant='%s',{key}='%s'}}[1h]))"
    return (
        f'{{{{ with query (printf "{info}" $labels.tenant $labels.{key}) }}}}'
        "{{ (index . 0).Labels.name }}"
        f"{{{{ else }}}}{{{{ $labels.{key} }}}}{{{{ end }}}}"
    )


def one(expr: str, s: RuleSettings, aggregation: str = "max") -> str:
    """`expr` once per series however many replicas report it: their labels aggregated away.

    Replicas of one shard report the same values, so `max` (or `min`) only removes the copy.
    """
    return f"{aggregation} without ({', '.join(s.replica_labels)}) ({expr})"


def _runs(*matchers: str) -> str:
    """The finished-runs counter with these matchers (none: the bare name)."""
    inside = ",".join(m for m in matchers if m)
    return f"cockpit_runs_finished_total{{{inside}}}" if inside else "cockpit_runs_finished_total"


def _processes(ids: list[str], op: str) -> str:
    """A matcher on `process_id` for the processes that have an objective of their own."""
    if not ids:
        return ""
    return f'process_id{op}"{_quoted("|".join(re.escape(i) for i in ids))}"'


def _quoted(text: str) -> str:
    """Text for the inside of a double-quoted PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def recording_rules(s: RuleSettings) -> list[dict[str, str]]:
    """Series that dashboards and alerts share."""
    own = sorted(s.process_objectives)
    rest, only = _processes(own, "!~"), _processes(own, "=~")
    rules = [
        {
            "record": f"tenant:cockpit_run_failures:ratio_rate{w}",
            "expr": _ratio("tenant", w, rest, s),
        }
        for w in WINDOWS
    ]
    rules += [
        {
            "record": f"tenant:cockpit_runs_finished:rate{w}",
            "expr": f"sum by (tenant) ({one(f'rate({_runs(rest)}[{w}])', s)})",
        }
        for w in LONG_WINDOWS
    ]
    if own:
        rules += [
            {
                "record": f"tenant_process:cockpit_run_failures:ratio_rate{w}",
                "expr": _ratio("tenant, process_id", w, only, s),
            }
            for w in WINDOWS
        ]
        rules += [
            {
                "record": f"tenant_process:cockpit_runs_finished:rate{w}",
                "expr": f"sum by (tenant, process_id) ({one(f'rate({_runs(only)}[{w}])', s)})",
            }
            for w in LONG_WINDOWS
        ]
    rules += [
        {
            "record": "tenant_status:cockpit_runs_finished:rate5m",
            "expr": f"sum by (tenant, status) ({one('rate(cockpit_runs_finished_total[5m])', s)})",
        },
        {
            "record": "tenant_pool:cockpit_agents_up:sum",
            "expr": f"sum by (tenant, pool) ({one('cockpit_agent_up', s)})",
        },
        {
            "record": "tenant_pool:cockpit_agents_enabled:sum",
            "expr": f"sum by (tenant, pool) ({one('cockpit_agent_enabled', s)})",
        },
    ]
    return rules


def _ratio(by: str, window: str, matcher: str, s: RuleSettings) -> str:
    failed = one(f"rate({_runs(FAILED, matcher)}[{window}])", s)
    every = one(f"rate({_runs(matcher)}[{window}])", s)
    return f"sum by ({by}) ({failed})\n/\nsum by ({by}) ({every})"


def _burn_alerts(s: RuleSettings) -> list[Alert]:
    """The run SLO's burns: one alert name, with severity and windows as labels.

    So a critical burn inhibits the warning one of the same tenant (Alertmanager's
    `equal: [tenant, alertname, process_id]`). Each burn needs `min_runs` finished runs in its
    long window: one failed run of a daily process is a 100% failure ratio, not a burning budget.
    """
    targets = [("tenant", "", s.objective)]
    targets += [("tenant_process", i, o) for i, o in sorted(s.process_objectives.items())]
    alerts = []
    for level, process, objective in targets:
        on = "tenant, process_id" if process else "tenant"
        only = f'{{process_id="{_quoted(process)}"}}' if process else ""
        for long, short, factor, severity, wait in BURNS:
            threshold = factor * (1 - objective)
            ratio = f"{level}:cockpit_run_failures:ratio_rate"
            expr = (
                f"{ratio}{long}{only} > {threshold:g}\n"
                f"and on ({on}) {ratio}{short}{only} > {threshold:g}\n"
                f"and on ({on}) {level}:cockpit_runs_finished:rate{long}{only}"
                f" * {parse_duration(long):g} >= {s.thresholds.min_runs}"
            )
            labels = {"long_window": long, "short_window": short}
            alerts.append(
                Alert(
                    "CockpitRunFailureBudgetBurn",
                    expr,
                    wait,
                    severity,
                    "Runs fail fast enough to spend the error budget early.",
                    "Tenant {{ $labels.tenant }}"
                    + (f" process {name_of('process')}" if process else "")
                    + f": run failure ratio {{{{ $value | humanizePercentage }}}} over {long}"
                    f" against an objective of {objective * 100:g}% successful runs.",
                    "run-failure-ratio-above-objective",
                    labels=labels,
                )
            )
    return alerts


def _while_agents_unreadable(current: str, remembered: str, s: RuleSettings) -> str:
    """The condition now, or, while the tenant's agents cannot be read, as last seen.

    A platform outage removes the agent series; without this the alerts about them would
    resolve while nothing is known (the pool may well still be offline). Gated on the agents
    job itself, not on the whole tenant being blind: the platform's jobs fail one by one, and
    until the last one has, the tenant is not blind yet while its agent series are gone.
    """
    memory = _prom_duration(s.thresholds.blind_memory)
    remembered = remembered.replace("[M]", f"[{memory}]")
    return f"(\n  {current}\n)\nor\n(\n  {remembered}\n  and on (tenant) {AGENTS_UNREADABLE}\n)"


def _operator_alerts(s: RuleSettings) -> list[Alert]:
    t = s.thresholds
    job = s.scrape_job
    grace = _prom_duration(t.restart_grace)
    return [
        Alert(
            "CockpitExporterDown", f'up{{job="{job}"}} == 0', "5m", "critical",
            "The cockpit exporter cannot be scraped.",
            "Prometheus has not scraped {{ $labels.instance }} for 5 minutes; no tenant's "
            "data is fresh.",
            "exporter-down", owner="operator",
        ),
        Alert(
            "CockpitExporterAbsent", f'absent(up{{job="{job}"}})', "10m", "critical",
            "Prometheus has no cockpit exporter target at all.",
            f'No target of scrape job "{job}" exists: service discovery lost the exporter '
            "or the scrape config changed; no tenant's data is collected.",
            "exporter-absent", owner="operator",
        ),
        Alert(
            "CockpitConfigReloadFailed", "cockpit_exporter_config_last_reload_successful == 0",
            "5m", "warning", "The exporter's last configuration reload failed.",
            "{{ $labels.instance }} runs an older configuration: the last reload was rejected.",
            "config-reload-failed", owner="operator",
        ),
        Alert(
            "CockpitTenantBlind",
            f"time() - {BLIND_SINCE} > {t.blind_for:g}\nand on (tenant) {BLIND}",
            "0m", "critical", "Nothing the platform reports about a tenant is known.",
            "Tenant {{ $labels.tenant }}: every platform collection has failed for "
            "{{ $value | humanizeDuration }}; agents, schedules and runs are unknown, and "
            "alerts about them stay as they were.",
            "tenant-blind", owner="operator", inform_tenant=True, keep_firing_for=grace,
        ),
        Alert(
            "CockpitCollectionFailing",
            f"time() - {one('cockpit_collection_failing_since_timestamp_seconds', s)}"
            f" > {t.collection_failing_for:g}\n"
            f"and {one('cockpit_collection_success', s)} == 0",
            "0m", "warning", "A tenant's data collection keeps failing.",
            "Tenant {{ $labels.tenant }}: {{ $labels.source }} collection "
            "{{ $labels.query }} has failed for {{ $value | humanizeDuration }}.",
            "collection-failing-for-a-tenant", owner="operator", keep_firing_for=grace,
        ),
        Alert(
            "CockpitDataStale",
            f"time() - {one('cockpit_collection_last_success_timestamp_seconds', s)}\n"
            f"> {t.stale_intervals:g} * {one('cockpit_collection_interval_seconds', s)}",
            "5m", "warning", "A tenant's data has not been refreshed for several intervals.",
            "Tenant {{ $labels.tenant }}: {{ $labels.source }} {{ $labels.query }} last "
            "succeeded {{ $value | humanizeDuration }} ago.",
            "data-stale", owner="operator", inform_tenant=True, keep_firing_for=grace,
        ),
        Alert(
            "CockpitSeriesDropped",
            f"{one('increase(cockpit_collection_series_dropped_total[15m])', s)} > 0",
            "0m", "warning", "A query returns more series than its max_series limit.",
            "Tenant {{ $labels.tenant }}: {{ $labels.source }} {{ $labels.query }} dropped "
            "{{ $value | humanize }} series in 15 minutes; dashboards miss them.",
            "series-dropped", owner="operator",
        ),
        Alert(
            "CockpitPlatformTokenFailing",
            f"{one('increase(cockpit_platform_token_failures_total[10m])', s)} > 0\n"
            "and on (tenant) "
            f"{one('increase(cockpit_platform_token_refreshes_total[10m])', s)} == 0",
            "10m", "warning", "The exporter cannot get a platform token for a tenant.",
            "Tenant {{ $labels.tenant }}: every token request failed for 10 minutes "
            "(client credentials wrong, revoked, or the token endpoint down).",
            "platform-token-failing", owner="operator",
        ),
        Alert(
            "CockpitScrapeTokenExpiring",
            "cockpit_exporter_token_expiry_timestamp_seconds - time() < 14 * 86400",
            "1h", "warning", "A bearer token of the exporter expires within 14 days.",
            "{{ $labels.instance }}: token {{ $labels.token }} stops being accepted in "
            "{{ $value | humanizeDuration }}; add its successor to the web config beside it.",
            "scrape-token-expiring", owner="operator",
        ),
        Alert(
            "CockpitAuditWriteFailing",
            "increase(cockpit_exporter_audit_write_failures_total[10m]) > 0",
            "0m", "warning", "Admin actions are not all reaching the audit trail.",
            "{{ $labels.instance }}: {{ $value | humanize }} audit records could not be written "
            "in 10 minutes (disk full, read-only, the path a symlink); collection goes on.",
            "audit-write-failing", owner="operator",
        ),
        Alert(
            "CockpitTenantDiscoveryFailing", "cockpit_exporter_discovery_success == 0",
            "10m", "warning",
            "Tenant discovery keeps failing; new or removed tenants are not picked up.",
            "{{ $labels.instance }} cannot read its tenant registry; it keeps collecting the "
            "tenants it knew.",
            "tenant-discovery-failing", owner="operator",
        ),
        Alert(
            "CockpitRunsLagging",
            f"{one('cockpit_platform_runs_lag_seconds', s, 'min')} > {t.runs_lag:g}",
            "10m", "warning", "A tenant's run counts are falling behind the platform.",
            "Tenant {{ $labels.tenant }}: runs are known only up to "
            "{{ $value | humanizeDuration }} ago; run counts and failure ratios lag by that much.",
            "runs-lagging", owner="operator",
        ),
        Alert(
            "CockpitPlatformApiErrors",
            "sum by (tenant, query) (rate(cockpit_platform_requests_total"
            '{class=~"429|5xx|error"}[10m]))\n/\nsum by (tenant, query) '
            f"(rate(cockpit_platform_requests_total[10m])) > {t.api_error_ratio:g}",
            "10m", "warning", "The platform API fails many requests for a tenant.",
            "Tenant {{ $labels.tenant }}: {{ $value | humanizePercentage }} of requests to "
            "{{ $labels.query }} fail (5xx, 429 or no answer).",
            "platform-api-failing-for-a-tenant", owner="operator",
        ),
    ]  # fmt: skip


def _tenant_alerts(s: RuleSettings) -> list[Alert]:
    t = s.thresholds
    return [
        Alert(
            "CockpitAgentOffline",
            _while_agents_unreadable(
                f"{one('cockpit_agent_up', s)} == 0\n  and on (tenant, pool, agent_id) "
                f"{one('cockpit_agent_enabled', s)} == 1",
                f"{one('last_over_time(cockpit_agent_up[M])', s)} == 0\n"
                "  and on (tenant, pool, agent_id) "
                f"{one('last_over_time(cockpit_agent_enabled[M])', s)} == 1",
                s,
            ),
            _prom_duration(t.agent_offline_for), "warning", "An enabled agent is offline.",
            f"Tenant {{{{ $labels.tenant }}}}: agent {name_of('agent')} in pool "
            "{{ $labels.pool }} is offline.",
            "agent-offline",
        ),
        Alert(
            "CockpitAgentPoolOffline",
            _while_agents_unreadable(
                "tenant_pool:cockpit_agents_up:sum == 0\n"
                "  and on (tenant, pool) tenant_pool:cockpit_agents_enabled:sum > 0",
                "last_over_time(tenant_pool:cockpit_agents_up:sum[M]) == 0\n  and on (tenant, pool)"
                " last_over_time(tenant_pool:cockpit_agents_enabled:sum[M]) > 0",
                s,
            ),
            _prom_duration(t.pool_offline_for), "critical", "Every agent of a pool is offline.",
            "Tenant {{ $labels.tenant }}: no agent of pool {{ $labels.pool }} is up ("
            + _offline_agents() + "); its processes cannot run.",
            "agent-pool-offline",
        ),
        *_burn_alerts(s),
        Alert(
            "CockpitScheduleLate",
            f"time() - {one('cockpit_schedule_next_run_timestamp_seconds', s)}"
            f" > {t.schedule_late_after:g}\n"
            f"and on (tenant, schedule_id) {one('cockpit_schedule_enabled', s)} == 1",
            "5m", "warning", "An enabled schedule did not start its run on time.",
            f"Tenant {{{{ $labels.tenant }}}}: schedule {name_of('schedule')} is "
            "{{ $value | humanizeDuration }} late.",
            "schedule-late",
        ),
        Alert(
            "CockpitRunsStuckInQueue",
            f"time() - {one('cockpit_runs_oldest_queued_timestamp_seconds', s)}"
            f" > {t.queued_too_long:g}",
            "5m", "warning", "Runs wait in the queue for a long time.",
            f"Tenant {{{{ $labels.tenant }}}}: the oldest queued run of process "
            f"{name_of('process')} has waited {{{{ $value | humanizeDuration }}}}.",
            "runs-stuck-in-the-queue",
        ),
    ]  # fmt: skip


def alerts(s: RuleSettings) -> list[Alert]:
    """Every alert, with its thresholds from `s`: the operators' first, then the tenants'."""
    return _operator_alerts(s) + _tenant_alerts(s)


def render_rules(settings: RuleSettings | None = None) -> dict[str, Any]:
    """The rule file as a YAML-ready mapping."""
    s = settings or RuleSettings()
    return {
        "groups": [
            {"name": "cockpit-recording", "rules": recording_rules(s)},
            {"name": "cockpit-alerts", "rules": [a.render(s) for a in alerts(s)]},
        ]
    }


def _prom_duration(seconds: float) -> str:
    """Seconds in Prometheus notation, in the largest unit that divides them."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
