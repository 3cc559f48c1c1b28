"""Every metric family the platform source exports (the code side of docs/metrics.md)."""

from exporter.exposition import SCHEDULED_NOTE, Family

AGENT_STATUSES = ("online", "busy", "offline", "disabled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")
# Runs last from seconds to hours, most of them one to five minutes (the simulator's 5-180 s,
# a platform's usual timeout at 10 minutes): fine steps from 15 s to 5 min, where a p95
# moves, then the timeout and coarse steps to 2 h. Ten bounds: 13 series per process.
DURATION_BUCKETS = (15, 30, 60, 90, 120, 180, 300, 600, 1800, 7200)
# API requests take milliseconds on a good day and up to the request timeout on a bad one.
REQUEST_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30)
# The one definition of a failed run (`cancelled` is neither success nor failure).
FAILED_STATUSES = ("failed", "timed_out")


def _family(name: str, kind: str, text: str) -> Family:
    return Family(name, kind, text + SCHEDULED_NOTE)


AGENTS = _family("cockpit_agents", "gauge", "Agents by pool and status (0 for known statuses).")
AGENT_UP = _family("cockpit_agent_up", "gauge", "1 if the agent is online or busy, else 0.")
AGENT_ENABLED = _family(
    "cockpit_agent_enabled", "gauge", "1 unless the agent is disabled (expected to be down)."
)
AGENT_HEARTBEAT = _family(
    "cockpit_agent_last_heartbeat_timestamp_seconds",
    "gauge",
    "Unix time of the agent's last heartbeat (absent if it never sent one).",
)
AGENT_INFO = _family(
    "cockpit_agent_info", "gauge", "Name, pool and version of each agent by id; always 1."
)
PROCESS_ENABLED = _family("cockpit_process_enabled", "gauge", "1 if the process is enabled.")
PROCESS_INFO = _family("cockpit_process_info", "gauge", "Name of each process by id; always 1.")
SCHEDULE_ENABLED = _family("cockpit_schedule_enabled", "gauge", "1 if the schedule is enabled.")
SCHEDULE_NEXT = _family(
    "cockpit_schedule_next_run_timestamp_seconds", "gauge", "Unix time of the next planned run."
)
SCHEDULE_LAST = _family(
    "cockpit_schedule_last_run_timestamp_seconds", "gauge", "Unix time of the last run."
)
SCHEDULE_SUCCESS = _family(
    "cockpit_schedule_last_run_success",
    "gauge",
    "1 if the last run succeeded, 0 if it failed or timed out; absent if it was cancelled.",
)
SCHEDULE_INFO = _family(
    "cockpit_schedule_info",
    "gauge",
    "Name, process and cron expression of each schedule by id; always 1.",
)
RUNS_FINISHED = _family(
    "cockpit_runs_finished_total",
    "counter",
    "Runs that reached a final status, each counted once; kept across restarts with state.",
)
RUN_DURATION = _family(
    "cockpit_run_duration_seconds", "histogram", "Duration of finished runs, start to finish."
)
RUNS_QUEUED = _family("cockpit_runs_queued", "gauge", "Runs waiting for an agent.")
RUNS_RUNNING = _family("cockpit_runs_running", "gauge", "Runs executing on an agent.")
RUNS_OLDEST_QUEUED = _family(
    "cockpit_runs_oldest_queued_timestamp_seconds",
    "gauge",
    "Unix time the oldest waiting run was queued; its age is time() minus this.",
)
RUNS_LAG = Family(
    "cockpit_platform_runs_lag_seconds",
    "gauge",
    "How far behind the platform the run counts are: now minus the time up to which every "
    "run is known (0 right after a complete poll). Absent before the first complete poll.",
)
DATA_FAMILIES = (
    AGENTS, AGENT_UP, AGENT_ENABLED, AGENT_HEARTBEAT, AGENT_INFO, PROCESS_ENABLED, PROCESS_INFO,
    SCHEDULE_ENABLED, SCHEDULE_NEXT, SCHEDULE_LAST, SCHEDULE_SUCCESS, SCHEDULE_INFO,
    RUNS_FINISHED, RUN_DURATION, RUNS_QUEUED, RUNS_RUNNING, RUNS_OLDEST_QUEUED, RUNS_LAG,
)  # fmt: skip

REQUESTS = Family(
    "cockpit_platform_requests_total",
    "counter",
    "Platform API requests by query and outcome class (2xx to 5xx, error: no response).",
)
REQUEST_DURATION = Family(
    "cockpit_platform_request_duration_seconds", "histogram", "Platform API request durations."
)
RETRIES = Family("cockpit_platform_retries_total", "counter", "Platform API requests retried.")
TOKEN_REFRESHES = Family(
    "cockpit_platform_token_refreshes_total", "counter", "Access tokens fetched."
)
TOKEN_FAILURES = Family(
    "cockpit_platform_token_failures_total", "counter", "Failed attempts to fetch a token."
)
CLIENT_FAMILIES = (REQUESTS, REQUEST_DURATION, RETRIES, TOKEN_REFRESHES, TOKEN_FAILURES)
