"""Secret files re-read when they change: a fixed password takes effect without a reload.

A rotated or corrected password, client secret or token file needs nobody to reload the
exporter.

Every few seconds the files the configuration read are looked at (inode, size, mtime: a
Kubernetes secret volume swaps a symlink, an editor rewrites in place). A change reloads the
configuration, which applies whole or not at all, as `POST /-/reload` does; the log names the
file, never its content.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import structlog

from exporter.exposition import Family
from exporter.store import Snapshot, SnapshotStore

log = structlog.get_logger(__name__)
EVERY = 5.0
CHANGES = Family(
    "cockpit_exporter_secret_file_changes_total",
    "counter",
    "Changes seen in secret files the configuration reads; each one reloaded it.",
)
KEY = ("", "exporter", "secret_files")
Fingerprint = tuple[int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """What tells a changed file apart; None if it cannot be read (a reload says why)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


class SecretWatch:
    """Watches the secret files of the configuration in use and reloads on a change."""

    def __init__(
        self,
        store: SnapshotStore,
        files: Callable[[], Iterable[Path]],
        reload: Callable[[], Awaitable[list[str]]],
        every: float = EVERY,
    ) -> None:
        self._files, self._reload, self._every = files, reload, every
        self._store = store
        self._seen = self._look()
        self.changes = 0
        self._task: asyncio.Task[None] | None = None
        store.register([CHANGES])
        self._publish()

    def _look(self) -> dict[Path, Fingerprint]:
        return {path: fingerprint(path) for path in self._files()}

    def start(self) -> None:
        """Look every `every` seconds from now on."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop looking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.check()

    async def check(self) -> None:
        """Reload if a watched file changed since the last look (tests call this directly)."""
        now = self._look()
        changed = sorted(p for p, mark in now.items() if self._seen.get(p, mark) != mark)
        if not changed:
            self._seen = now
            return
        for path in changed:
            log.info("secret file changed, reloading", file=str(path))
        self.changes += len(changed)
        self._publish()
        problems = await self._reload()
        if problems:
            log.warning("reload after a secret change failed", files=[str(p) for p in changed])
        # The files of the configuration now in use, as they were when the reload began.
        self._seen = {p: now.get(p, fingerprint(p)) for p in self._files()}

    def _publish(self) -> None:
        body = f"{CHANGES.name} {self.changes}\n".encode()
        self._store.put(KEY, Snapshot(None, {CHANGES.name: body}, operators_only=True))
