"""What the exporter knows of the SQL source before it loads it: its jobs and families.

The source itself (SQLAlchemy, PyMySQL, the pipeline: 17 MB of a process) is imported when
the first SQL job arrives (sources/deferred.py), so a platform-only exporter never carries it.
"""

from exporter.config import Config, MetricSpec
from exporter.exposition import SCHEDULED_NOTE, Family
from exporter.sources.base import Job

KIND = "sql"
CRASH_REASON = "query"


def data_family(metric: MetricSpec) -> Family:
    """The exposition family of a configured metric."""
    kind = "stateset" if metric.type == "enum" else metric.type
    return Family(metric.name, kind, metric.help.rstrip() + SCHEDULED_NOTE)


def jobs(config: Config) -> list[Job]:
    """One job per (tenant, query) of the config."""
    return [
        Job(
            q.tenant,
            KIND,
            q.query.name,
            q.query.interval,
            q.query.timeout,
            q,
            q.database.display,
            q.query.stale_after,
            q.query.schedule,
        )
        for q in config.jobs
    ]
