"""Readiness: every job has run once, or the grace period has passed."""

import time
from collections.abc import Hashable, Iterable


class Readiness:
    """Tracks which jobs still owe their first run."""

    def __init__(self, grace_period: float) -> None:
        self._deadline = time.monotonic() + grace_period
        self._pending: set[Hashable] = set()
        self._stopping = False

    def expect(self, keys: Iterable[Hashable]) -> None:
        """Jobs whose first run readiness waits for."""
        self._pending.update(keys)

    def done(self, key: Hashable) -> None:
        """A job finished a run, successful or not."""
        self._pending.discard(key)

    def forget(self, key: Hashable) -> None:
        """A job was removed; readiness no longer waits for it."""
        self._pending.discard(key)

    def stopping(self) -> None:
        """The process is shutting down: report not ready from now on."""
        self._stopping = True

    @property
    def pending(self) -> int:
        """How many jobs have not run yet."""
        return len(self._pending)

    @property
    def ready(self) -> bool:
        """Whether to answer /readyz with 200."""
        if self._stopping:
            return False
        return not self._pending or time.monotonic() >= self._deadline
