"""The audit trail: admin actions as hash-chained JSON lines, apart from the ordinary log.

Each record holds the SHA-256 of the line before it (`prev`), so an edit anywhere but in
the newest line breaks the chain, and `cockpit-exporter audit verify` names where. Records
are written by a thread of their own (append, fsync per record, rotation by size with the
older files kept): a slow or full disk delays the audit, never collection; a record that
cannot be written is counted, logged, and the chain goes on from the last one written.
Records name principals, tenants, jobs and credentials by name, never a secret.
"""

import hashlib
import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from exporter.exposition import Family
from exporter.logs import Sampled

log = structlog.get_logger(__name__)
GENESIS = "0" * 64  # the `prev` of the first record ever written to a trail
FAILURES = Family(
    "cockpit_exporter_audit_write_failures_total",
    "counter",
    "Audit records that could not be written (disk, queue full); collection went on.",
)
RECORDS = Family(
    "cockpit_exporter_audit_records_total", "counter", "Audit records written since start."
)
SUMMARY_EVERY = 60.0  # refused requests are summarised per principal and minute
_QUEUE = 1024
_FAILED = Sampled("audit record not written", 60.0)
_STOP = object()


def digest(line: bytes) -> str:
    """The hash a record's successor holds: SHA-256 of the line, without its newline."""
    return hashlib.sha256(line).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The last complete line of a file (read from the end), or None if there is none."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 65536))
        lines = handle.read().rstrip(b"\n").split(b"\n")
    return lines[-1] or None


class AuditLog:
    """Appends records to `path` from a writer thread; rotates at `max_bytes`, keeps `keep`."""

    def __init__(self, path: Path, max_bytes: int = 16 * 2**20, keep: int = 5) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.written = 0
        self.failures = 0
        self._queue: queue.Queue[object] = queue.Queue(_QUEUE)
        self._refused: Counter[tuple[str, int]] = Counter()
        self._seen: set[str] = set()  # scoped tokens whose first use is recorded
        self._lock = threading.Lock()
        self._prev: str | None = None  # read from the file by the thread, before its first write
        self._thread = threading.Thread(target=self._write_all, name="audit", daemon=True)
        self._thread.start()

    def record(self, action: str, who: str, **details: Any) -> None:
        """Queue one record; never blocks (a full queue is a counted failure)."""
        entry = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "action": action,
                 "who": who, **details}  # fmt: skip
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._failed("queue full")

    def refused(self, who: str, status: int) -> None:
        """Count a 401 or 403; the writer summarises them per principal once a minute."""
        with self._lock:
            self._refused[(who, status)] += 1

    def first_use(self, token: str) -> None:
        """A scoped token's first successful use in this process is recorded once."""
        if token in self._seen:
            return
        self._seen.add(token)
        self.record("token first use", token, token=token)

    def close(self, timeout: float = 5.0) -> None:
        """Write the pending summary and records, then stop the thread (bounded wait)."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self._failed("queue full at shutdown")
        self._thread.join(timeout)

    def render(self) -> dict[str, bytes]:
        """The audit counters as sample lines."""
        return {
            FAILURES.name: f"{FAILURES.name} {self.failures}\n".encode(),
            RECORDS.name: f"{RECORDS.name} {self.written}\n".encode(),
        }

    def _write_all(self) -> None:
        summarised = time.monotonic()
        while True:
            try:
                entry = self._queue.get(timeout=max(0.1, SUMMARY_EVERY - (time.monotonic() -
                                                                          summarised)))  # fmt: skip
            except queue.Empty:
                entry = None
            if time.monotonic() - summarised >= SUMMARY_EVERY or entry is _STOP:
                self._summarise()
                summarised = time.monotonic()
            if entry is _STOP:
                return
            if isinstance(entry, dict):
                self._write(entry)

    def _summarise(self) -> None:
        with self._lock:
            counts, self._refused = self._refused, Counter()
        for (who, status), count in sorted(counts.items()):
            self._write({"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                         "action": "access refused", "who": who, "status": status,
                         "count": count, "period_seconds": SUMMARY_EVERY})  # fmt: skip

    def _write(self, entry: Mapping[str, Any]) -> None:
        try:
            if self._prev is None:
                self._prev = self._chain_head()
            line = json.dumps({**entry, "prev": self._prev}, sort_keys=True,
                              separators=(",", ":")).encode()  # fmt: skip
            self._append(line)
        except (OSError, ValueError) as exc:
            self._failed(str(getattr(exc, "strerror", None) or exc))
            return
        self._prev = digest(line)
        self.written += 1

    def _chain_head(self) -> str:
        """The hash of the newest record on disk (this file, else the last rotated one)."""
        for path in (self.path, self._rotated(1)):
            last = _last_line(path)
            if last is not None:
                return digest(last)
        return GENESIS

    def _append(self, line: bytes) -> None:
        if self.path.is_symlink():
            raise OSError(40, "the audit file is a symlink; not followed")
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) + 1 > self.max_bytes:
            self._rotate()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        descriptor = os.open(self.path, flags, 0o600)
        try:
            os.write(descriptor, line + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _rotate(self) -> None:
        """`path` becomes `path.1`, `path.1` becomes `path.2` …; the oldest beyond `keep` goes."""
        self._rotated(self.keep).unlink(missing_ok=True)
        for index in range(self.keep - 1, 0, -1):
            older = self._rotated(index)
            if older.exists() or older.is_symlink():
                older.replace(self._rotated(index + 1))
        self.path.replace(self._rotated(1))

    def _failed(self, reason: str) -> None:
        self.failures += 1
        left_out = _FAILED.allow("audit")
        if left_out is not None:
            log.error("audit record not written", error=reason, left_out=left_out)


def record_once(path: Path, action: str, who: str, **details: Any) -> bool:
    """One record from a command that runs once; whether it was written."""
    trail = AuditLog(path)
    trail.record(action, who, **details)
    trail.close()
    return trail.written == 1


def verify(paths: list[Path]) -> tuple[int, str | None]:
    """Records checked, and the first altered record (file and line) or None if intact.

    `paths` in the order written: the oldest rotated file first, the live file last. A link
    that does not hold is blamed on the record before it when the record after it is itself
    vouched for by its successor, else on the record after it.
    """
    lines: list[tuple[str, bytes]] = []
    for path in paths:
        with path.open("rb") as handle:
            lines += [(f"{path}:{n}", raw.rstrip(b"\n")) for n, raw in enumerate(handle, 1)]
    claims: list[object] = []
    for where, line in lines:
        try:
            claims.append(json.loads(line)["prev"])
        except (ValueError, KeyError, TypeError):
            return len(claims), f"{where}: not an audit record (altered or cut short)"
    for index in range(1, len(lines)):
        if claims[index] == digest(lines[index - 1][1]):
            continue
        after_holds = index + 1 < len(lines) and claims[index + 1] == digest(lines[index][1])
        if after_holds:
            return index, f"{lines[index - 1][0]}: record altered (the next one's prev differs)"
        if index + 1 < len(lines):
            return index, f"{lines[index][0]}: record altered (its prev and its hash differ)"
        return index, f"{lines[index - 1][0]} or {lines[index][0]}: a record was altered"
    return len(lines), None
