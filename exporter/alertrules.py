"""The `alerting` settings the alert rules are rendered from: scrape job, objectives, thresholds.

Defaults render the committed `alerts/cockpit.rules.yml`; `render rules --config F` reads
these keys from the config file instead.
"""

from typing import Annotated

from pydantic import AliasChoices, Field

from exporter.durations import Duration
from exporter.fields import HttpUrl, Model

# The project's documented URL (pyproject's [project.urls] Documentation) + the runbooks page;
# set alerting.runbook_base_url to where your copy of docs/runbooks.md is served.
DEFAULT_RUNBOOKS = "https://github.com/cockpit-exporter/cockpit-exporter/blob/main/docs/runbooks.md"
Objective = Annotated[float, Field(gt=0.5, lt=1)]
# A process id as the platform reports it (names change, ids hold); control characters
# cannot go into a PromQL string.
ProcessId = Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f]+$")]
LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class Thresholds(Model):
    """When each alert fires; durations in Prometheus notation (`5m`) or seconds."""

    collection_failing_for: Duration = 900.0
    # Alerts that hold through an exporter restart (its scrapes missing, then back with the
    # same durable timestamps) keep firing this long without samples.
    restart_grace: Duration = 600.0
    stale_intervals: float = Field(3.0, ge=1, le=1000)  # data stale after this many intervals
    blind_for: Duration = 300.0
    # How long platform alerts keep their state while blind: a PromQL range, so a minute or more.
    blind_memory: Annotated[Duration, Field(ge=60)] = 3600.0
    schedule_late_after: Duration = 600.0
    queued_too_long: Duration = 1800.0
    api_error_ratio: float = Field(0.25, gt=0, le=1)
    runs_lag: Duration = 900.0
    pool_offline_for: Duration = 120.0
    agent_offline_for: Duration = 600.0
    min_runs: int = Field(10, ge=1)  # fewer finished runs in a burn window never page


class RuleSettings(Model):
    """Everything `render rules` takes from the config; each key has a default."""

    scrape_job: str = Field("cockpit", min_length=1, pattern=r"^[^\"\\\n]+$")
    objective: Objective = 0.95
    process_objectives: dict[ProcessId, Objective] = Field(default_factory=dict)
    # `runbooks` is its earlier name, still read.
    runbooks: HttpUrl = Field(
        DEFAULT_RUNBOOKS, validation_alias=AliasChoices("runbook_base_url", "runbooks")
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    # Labels that tell replicas of the same shard apart (the scrape target, the external
    # replica label): tenant alerts and recording rules aggregate them away, so two
    # replicas collecting the same tenants page once. Must not name a label our series carry.
    replica_labels: tuple[LabelName, ...] = ("instance", "replica")
