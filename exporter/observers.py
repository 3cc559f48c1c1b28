"""The exporter's own trails beside its metrics: traces (OTLP) and the audit file.

Both are optional and both count what they lose; those counters are published here every
few seconds, as both change in threads of their own.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter import spans
from exporter.audit import FAILURES, RECORDS, AuditLog
from exporter.settings import Settings
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

if TYPE_CHECKING:
    from exporter.tracing import Tracing

KEY: SnapshotKey = ("", "exporter", "trails")
PUBLISH_EVERY = 5.0


class Observers:
    """Tracing and the audit trail of one exporter, as its settings ask."""

    def __init__(self, settings: Settings) -> None:
        self.audit: AuditLog | None = None
        if settings.audit_file is not None:
            self.audit = AuditLog(
                settings.audit_file, settings.audit_max_bytes, settings.audit_keep
            )
        self.tracing: Tracing | None = None
        endpoint = spans.endpoint_from(settings.tracing_otlp_endpoint)
        if endpoint is not None:
            # The SDK and its exporter are imported only when used: start-up stays as fast.
            from exporter import tracing  # noqa: PLC0415

            self.tracing = tracing.start(endpoint, settings.tracing_sample_ratio)
        self._task: asyncio.Task[None] | None = None

    def record(self, action: str, who: str, **details: object) -> None:
        """An audit record, if the trail is on."""
        if self.audit is not None:
            self.audit.record(action, who, **details)

    def start(self, store: SnapshotStore) -> None:
        """Register the counters and publish them from now on."""
        families = [spans.DROPPED] if self.tracing is not None else []
        families += [FAILURES, RECORDS] if self.audit is not None else []
        if not families:
            return
        store.register(families)
        self._publish(store.put)
        self._task = asyncio.get_running_loop().create_task(self._loop(store))

    async def _loop(self, store: SnapshotStore) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            self._publish(store.put)

    def _publish(self, put: Callable[[SnapshotKey, Snapshot], None]) -> None:
        bodies = dict(self.audit.render()) if self.audit is not None else {}
        if self.tracing is not None:
            bodies[spans.DROPPED.name] = self.tracing.render()
        put(KEY, Snapshot(None, bodies, operators_only=True))

    async def stop(self) -> None:
        """Stop publishing; flush the audit and the spans (each bounded in time)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
