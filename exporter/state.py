"""Durable collection state: what a source must remember across restarts.

Run cursors, de-duplication memory and counter values, one record per job.

The default store is a directory with one file per job, written atomically (temporary file,
fsync, rename, fsync of the directory) in a versioned format with a checksum; a MySQL table is
the option for replicas without local disks. A record that is missing starts the job from
scratch; one that is unreadable or corrupt does too, and is counted and logged, for that job
only. Records of jobs no longer configured are deleted after a retention period.
"""

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import structlog

from exporter.exposition import Family, escape_label_value

log = structlog.get_logger(__name__)
VERSION = 1
ERRORS = Family(
    "cockpit_exporter_state_errors_total",
    "counter",
    "Durable state that could not be read (corrupt) or written, by tenant and source kind; the"
    " job then starts from scratch or keeps running without saving.",
)


class StateError(Exception):
    """A record could not be read or written; the message says why (never the content)."""


class Store(Protocol):
    """Where records live."""

    async def load(self, key: str) -> bytes | None:
        """The raw record, or None if there is none."""
        ...

    async def save(self, key: str, data: bytes) -> None:
        """Replace the record atomically."""
        ...

    async def keys(self) -> dict[str, float]:
        """Every record's key with the time it was last written."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a record."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def encode(payload: dict[str, Any]) -> bytes:
    """A record: version, checksum of the canonical payload, payload."""
    digest = hashlib.sha256(_canonical(payload).encode()).hexdigest()
    return json.dumps({"version": VERSION, "sha256": digest, "payload": payload}).encode()


def encode_entries(scalars: dict[str, Any], name: str, entries: Iterable[tuple[str, Any]]) -> bytes:
    """`encode` of `{**scalars, name: dict(entries)}` (same payload and checksum), entry by entry.

    For a record of thousands of entries: neither a dict of them all nor a list of their texts
    is ever held, only one entry at a time and the record growing. `entries` must come sorted
    by key, as the checksum covers the canonical form.
    """
    digest, record = hashlib.sha256(), bytearray(b'{"version": %d, "payload": ' % VERSION)

    def add(text: str) -> None:
        piece = text.encode()
        digest.update(piece)
        record.extend(piece)

    fields = sorted([*scalars, name])
    add("{")
    for index, field in enumerate(fields):
        add(("," if index else "") + _canonical(field) + ":")
        if field != name:
            add(_canonical(scalars[field]))
            continue
        add("{")
        for position, (key, value) in enumerate(entries):
            add(("," if position else "") + _canonical(key) + ":" + _canonical(value))
        add("}")
    add("}")
    record.extend(b', "sha256": "%s"}' % digest.hexdigest().encode())
    return bytes(record)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode(data: bytes) -> dict[str, Any]:
    """The payload of a record; StateError if it is not one this version wrote intact."""
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise StateError("not JSON") from None
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise StateError(f"unknown format (version {record.get('version')!r})"
                         if isinstance(record, dict) else "not a record")  # fmt: skip
    payload = record.get("payload")
    if not isinstance(payload, dict) or hashlib.sha256(
        _canonical(payload).encode()
    ).hexdigest() != record.get("sha256"):
        raise StateError("checksum mismatch")
    return payload


class FileStore:
    """One file per record in a directory of this process's own (0700, files 0600).

    No path is followed through a symlink: a link where a record belongs is an error for that
    job (counted, like any unreadable record), never a way to write somewhere else.
    """

    LOCK = ".lock"  # held shared by running exporters, exclusively by `state restore`

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._ready = False
        # Saves run in threads: the first one prepares the directory while the others wait,
        # or its clean-up would remove their fresh temporary files.
        self._preparing = threading.Lock()
        self._lock: int | None = None

    @property
    def directory(self) -> Path:
        """Where the records are."""
        return self._directory

    def hold(self, exclusive: bool = False) -> None:
        """Take the directory's lock (shared: running; exclusive: restoring); StateError if taken.

        A restore must not write under a running exporter, nor an exporter start on a
        half-restored directory; the lock goes with the process, even when it is killed. A
        directory that cannot be used stops a restore; an exporter runs on (each record it
        cannot write is counted, as ever), with a warning.
        """
        try:
            self._prepare()
            path = self._directory / self.LOCK
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exclusive:
                raise StateError(f"{self._directory}: {_reason('lock', exc)}") from None
            log.warning("state directory not usable", directory=str(self._directory),
                        error=_reason("lock", exc))  # fmt: skip
            return
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            doing = "an exporter is running on it" if exclusive else "a restore is under way"
            raise StateError(f"{self._directory}: {doing}") from None
        self._lock = descriptor

    def release(self) -> None:
        """Let go of the directory's lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _path(self, key: str) -> Path:
        return self._directory / (quote(key, safe="") + ".json")

    async def load(self, key: str) -> bytes | None:
        """Read a record; a missing one is None."""
        try:
            return await asyncio.to_thread(self._read, self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(_reason("read", exc)) from None

    def _read(self, path: Path) -> bytes:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            return handle.read()

    async def save(self, key: str, data: bytes) -> None:
        """Write to a new temporary file, fsync it, rename over the record, fsync the directory."""
        try:
            await asyncio.to_thread(self._write, self._path(key), data)
        except OSError as exc:
            raise StateError(_reason("write", exc)) from None

    def _write(self, path: Path, data: bytes) -> None:
        self._prepare()
        if path.is_symlink():
            raise OSError(errno.ELOOP, "is a symlink")
        temporary = written_temporary(self._directory, data)
        try:
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _prepare(self) -> None:
        """Create the directory 0700 (tightened if it is ours and looser); drop old temp files."""
        with self._preparing:
            if not self._ready:
                self._make_directory()
                self._ready = True

    def _make_directory(self) -> None:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = self._directory.stat()
        loose = stat.S_IMODE(status.st_mode) & 0o077
        if loose and status.st_uid == os.geteuid():
            self._directory.chmod(0o700)
            log.info("state directory made private", directory=str(self._directory), mode="0700")
        for leftover in self._directory.glob(".*.tmp"):  # from a crash mid-write
            leftover.unlink(missing_ok=True)

    async def keys(self) -> dict[str, float]:
        """Records present, with when each was written (a link's own time: never followed)."""
        if not self._directory.is_dir():
            return {}
        return {
            unquote(path.name.removesuffix(".json")): path.lstat().st_mtime
            for path in self._directory.glob("*.json")
        }

    async def delete(self, key: str) -> None:
        """Remove a record if it is there (a link is removed, not what it points at)."""
        self._path(key).unlink(missing_ok=True)

    async def close(self) -> None:
        """Let go of the directory's lock."""
        self.release()


def written_temporary(directory: Path, data: bytes) -> Path:
    """A new hidden file in `directory` holding `data`, on disk (fsync) before it is used.

    mkstemp: a new name, O_EXCL and O_NOFOLLOW, mode 0600; a planted file or link is never
    opened.
    """
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def _reason(operation: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"cannot {operation}: the record's path is a symlink; not followed"
    return f"cannot {operation}: {exc.strerror or exc}"


class State:
    """Loads and saves jobs' records, counting what fails (self-metric) and logging it once."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.errors: Counter[tuple[str, str]] = Counter()
        self.revision = 0  # goes up with every error counted: `render` may have changed

    async def load(self, key: str) -> dict[str, Any] | None:
        """A job's payload, or None to start from scratch (no store, no record, or corrupt)."""
        if self.store is None:
            return None
        try:
            data = await self.store.load(key)
            return decode(data) if data is not None else None
        except StateError as exc:
            self._count(key, "read")
            log.warning("state unreadable, starting from scratch", job=key, error=str(exc))
            return None

    def corrupt(self, key: str) -> None:
        """A record decoded but did not fit the source's state: counted as a read error."""
        self._count(key, "read")
        log.warning("state unusable, starting from scratch", job=key)

    async def save(self, key: str, payload: dict[str, Any]) -> None:
        """Write a job's payload; a failure is counted and logged, collection goes on."""
        if self.store is not None:
            await self.save_encoded(key, encode(payload))

    async def save_encoded(self, key: str, data: bytes, owners: Iterable[str] = ()) -> None:
        """Write a record made by `encode` or `encode_entries`, counting a failure as `save` does.

        A record of several jobs names them as `owners` (read only on failure): it counts for each.
        """
        if self.store is None:
            return
        try:
            await self.store.save(key, data)
        except StateError as exc:
            if not self.errors[(key, "write")]:
                log.warning("state not saved", job=key, error=str(exc))
            self._count(key, "write")
            for owner in owners:
                self._count(owner, "write")

    def _count(self, key: str, operation: str) -> None:
        self.errors[(key, operation)] += 1
        self.revision += 1

    async def prune(self, keep: Iterable[str], retention: float) -> list[str]:
        """Delete records of jobs not in `keep` (job ids) last written before `retention`."""
        if self.store is None:
            return []
        wanted, horizon = set(keep), time.time() - retention
        records = (await self.store.keys()).items()
        # A job's health record (`<job>#health`) goes with the job.
        old = [k for k, t in records if k.partition("#")[0] not in wanted and t < horizon]
        for key in old:
            await self.store.delete(key)
        return old

    def render(self, tenant: str, source: str) -> dict[str, bytes]:
        """A tenant's error counters for one source kind: from zero when a store is configured."""
        prefix = f"{tenant}/{source}/"  # a job's records: its own and its health (`#health`)
        counts = Counter({"read": 0, "write": 0}) if self.store is not None else Counter()
        for (key, operation), count in self.errors.items():
            if key.startswith(prefix):
                counts[operation] += count
        labels = f'tenant="{escape_label_value(tenant)}",source="{source}"'
        lines = "".join(
            f'{ERRORS.name}{{{labels},operation="{op}"}} {count}\n'
            for op, count in sorted(counts.items())
        )
        return {ERRORS.name: lines.encode()} if lines else {}
