"""Backups of the durable state, and restores that refuse what they cannot restore whole.

An archive is one gzipped JSON document: format, version, the shard it was taken on, and
every record as the store holds it (each with its own checksum), under a checksum of the
whole. Records are read one at a time while the exporter runs: each is written atomically,
and a job's cursor and counts live in one record, so each job restores to a moment where
its counts and cursor agree, and runs finished since are counted once, from the cursor.
"""

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.state import FileStore, StateError, Store, decode, written_temporary

FORMAT = "cockpit-exporter-state-backup"
VERSION = 1
MAX_ARCHIVE_BYTES = 1 << 30  # inflated: a backup bigger than this is not ours


class ArchiveError(Exception):
    """The archive cannot be restored; the message says why and changes nothing."""


@dataclass(frozen=True)
class Archive:
    """A verified archive's contents."""

    shard: str
    created: str
    records: dict[str, str]


def _digest(records: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


async def backup(store: Store, out: Path, shard: str) -> int:
    """Write every record of `store` to a new archive at `out`; returns how many."""
    records: dict[str, str] = {}
    for key in sorted(await store.keys()):
        data = await store.load(key)
        if data is not None:  # deleted (pruned) since it was listed
            records[key] = data.decode()
    document = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "shard": shard,
        "records": records,
        "sha256": _digest(records),
    }
    _write_new(out, gzip.compress(json.dumps(document).encode()))
    return len(records)


def _write_new(path: Path, data: bytes) -> None:
    """A new file at `path` (never through a symlink, never over an existing file)."""
    temporary = written_temporary(path.parent, data)
    try:
        os.link(temporary, path)  # fails if `path` exists, a link included
    finally:
        temporary.unlink(missing_ok=True)


def read(path: Path, shard: str) -> Archive:
    """The archive at `path`, verified for this shard; ArchiveError says what is wrong."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as raw, gzip.open(raw) as handle:
            data = handle.read(MAX_ARCHIVE_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise ArchiveError(
            f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"{path}: larger than any state backup")
    document = _document(path, data)
    records = document.get("records")
    if not isinstance(records, dict) or _digest(records) != document.get("sha256"):
        raise ArchiveError(f"{path}: checksum mismatch: the archive is corrupt")
    if document.get("shard") != shard:
        raise ArchiveError(
            f"{path}: taken on shard {document.get('shard')!r}, this exporter is shard {shard!r}"
        )
    for key, record in records.items():
        try:
            decode(str(record).encode())
        except StateError as exc:
            raise ArchiveError(f"{path}: record {key!r}: {exc}") from None
    return Archive(
        shard, str(document.get("created")), {str(k): str(v) for k, v in records.items()}
    )


def _document(path: Path, data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError(f"{path}: not a state backup (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArchiveError(f"{path}: not a cockpit-exporter state backup")
    if document.get("version") != VERSION:
        raise ArchiveError(f"{path}: backup version {document.get('version')!r}, {VERSION} known")
    return document


async def restore(archive: Archive, store: Store) -> int:
    """Make `store` hold exactly the archive's records; returns how many.

    A directory is locked against running exporters first; a MySQL table must be empty.
    """
    if isinstance(store, FileStore):
        store.hold(exclusive=True)
    elif await store.keys():
        raise ArchiveError("the state table is not empty: restore into an empty one")
    try:
        for key in set(await store.keys()) - set(archive.records):
            await store.delete(key)
        for key, record in archive.records.items():
            await store.save(key, record.encode())
    finally:
        if isinstance(store, FileStore):
            store.release()
    return len(archive.records)
