"""What an admin action changed, as an audit record's details: names only, never secrets."""

from collections.abc import Iterable

from exporter.reconcile import Diff
from exporter.sources.base import Job
from exporter.webconfig import WebConfig

MAX_NAMED = 200  # ids listed per change; beyond, a count says how many more


def _names(items: Iterable[str]) -> dict[str, object]:
    found = sorted(items)
    listed: dict[str, object] = {"names": found[:MAX_NAMED]}
    if len(found) > MAX_NAMED:
        listed["more"] = len(found) - MAX_NAMED
    return listed


def delta(before: Iterable[str], after: Iterable[str]) -> dict[str, object]:
    """Names added and removed."""
    old, new = set(before), set(after)
    return {"added": _names(new - old), "removed": _names(old - new)}


def tenants_changed(
    before: Iterable[str], after: Iterable[str], jobs: Diff[Job]
) -> dict[str, object]:
    """Tenants added, removed, and changed (kept, with a job added, removed or changed)."""
    old, new = set(before), set(after)
    touched = {j.tenant for j in (*jobs.added, *jobs.removed, *jobs.changed)}
    return {**delta(old, new), "changed": _names(touched & old & new)}


def jobs_changed(jobs: Diff[Job]) -> dict[str, object]:
    """Job ids added, removed and changed."""
    return {
        "added": _names(j.id for j in jobs.added),
        "removed": _names(j.id for j in jobs.removed),
        "changed": _names(j.id for j in jobs.changed),
    }


def credentials_changed(before: WebConfig, after: WebConfig) -> dict[str, object]:
    """Basic-auth users and bearer tokens added or removed, by name."""
    return {
        "users": delta(before.basic_auth_users or {}, after.basic_auth_users or {}),
        "tokens": delta(
            (t.name for t in before.bearer_tokens or []),
            (t.name for t in after.bearer_tokens or []),
        ),
    }
