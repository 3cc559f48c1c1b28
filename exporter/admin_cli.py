"""Admin commands: `audit verify` and `state backup` / `state restore`."""

import argparse
import asyncio
import sys
from pathlib import Path

from exporter import backup
from exporter.audit import record_once, verify
from exporter.exitcodes import EXIT_FAILED, fail
from exporter.sharding import resolve
from exporter.state import StateError, Store
from exporter.stores import open_store


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The `audit` and `state` commands."""
    audit = commands.add_parser("audit", help="check the audit trail")
    audit_actions = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_actions.add_parser(
        "verify", help="check the hash chain; name the first altered record"
    )
    check.add_argument(
        "files", type=Path, nargs="+", help="audit files, oldest first (FILE.2 FILE.1 FILE)"
    )
    state = commands.add_parser("state", help="back up or restore the durable state")
    state_actions = state.add_subparsers(dest="state_command", required=True)
    save = state_actions.add_parser("backup", help="write the state to a new archive")
    save.add_argument("out", type=Path, help="the archive to write (must not exist)")
    load = state_actions.add_parser(
        "restore", help="restore an archive into a stopped exporter's state (or an empty one)"
    )
    load.add_argument("archive", type=Path, help="an archive `state backup` wrote")
    load.add_argument("--audit.file", dest="audit_file", type=Path,
                      help="record the restore in this audit trail")  # fmt: skip
    for parser in (save, load):
        _store_flags(parser)


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state.dir", dest="state_dir", type=Path, help="the state directory")
    parser.add_argument("--state.mysql-dsn", dest="state_mysql_dsn", help="or the MySQL table")
    parser.add_argument("--state.mysql-password-file", dest="state_mysql_password_file",
                        type=Path, help="password for --state.mysql-dsn")  # fmt: skip
    parser.add_argument("--shard", default="0", help="the exporter's shard (default 0)")
    parser.add_argument("--total-shards", dest="total_shards", type=int, default=1,
                        help="how many shards (default 1)")  # fmt: skip


def run(options: argparse.Namespace) -> int:
    """Run an `audit` or `state` command."""
    if options.command == "audit":
        return _verify(options.files)
    try:
        shard = resolve(options.shard, options.total_shards)
        store = open_store(
            options.state_dir, options.state_mysql_dsn, options.state_mysql_password_file
        )
    except ValueError as exc:
        return fail(str(exc))
    if store is None:
        return fail(f"state {options.state_command}: give --state.dir or --state.mysql-dsn")
    where = f"{shard.index}/{shard.total}"
    return asyncio.run(_state(options, store, where))


def _verify(files: list[Path]) -> int:
    try:
        count, broken = verify(files)
    except OSError as exc:
        return fail(f"audit verify: {exc.filename}: {exc.strerror}")
    if broken is not None:
        return fail(f"audit verify: {broken} ({count} records before it hold)", EXIT_FAILED)
    sys.stdout.write(f"{count} records, chain intact\n")
    return 0


async def _state(options: argparse.Namespace, store: Store, shard: str) -> int:
    try:
        if options.state_command == "backup":
            count = await backup.backup(store, options.out, shard)
            sys.stdout.write(f"{options.out}: {count} records of shard {shard}\n")
            return 0
        archive = backup.read(options.archive, shard)
        count = await backup.restore(archive, store)
    except (backup.ArchiveError, StateError) as exc:
        return fail(f"state {options.state_command}: {exc}")
    except FileExistsError:
        return fail(f"state backup: {options.out} exists; choose a new name")
    except OSError as exc:
        return fail(f"state {options.state_command}: {exc.strerror or exc}")
    finally:
        await store.close()
    if options.audit_file is not None and not record_once(
        options.audit_file, "state restore", "cli", archive=str(options.archive),
        created=archive.created, records=count, shard=shard,
    ):  # fmt: skip
        fail("state restore: done, but not recorded in the audit trail", EXIT_FAILED)
    sys.stdout.write(f"restored {count} records of {archive.created} (shard {shard})\n")
    return 0
