"""Start the stack's processes in dependency order, wait until each answers, stop on a signal."""

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import structlog
from pymysql import MySQLError

from exporter import logs
from exporter.exitcodes import EXIT_FAILED, fail
from exporter.stack import mariadb, secrets
from exporter.stack.processes import SKIPPED, Process, process
from exporter.stack.topology import Topology, TopologyError, load, materialise, start_order

log = structlog.get_logger(__name__)
READY_WITHIN = 60.0
PREFIX = "cockpit_stack_"  # of the default database and user: never another project's names
RECORD = "created.json"  # what this stack made, in its run directory
STOP_WITHIN = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m exporter.stack` (what `make stack` runs)."""
    parser = argparse.ArgumentParser(prog="python -m exporter.stack", description=__doc__)
    parser.add_argument("--compose", type=Path, default=Path("docker-compose.yml"))
    parser.add_argument("--run-dir", type=Path, default=Path(".stack"))
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port")
    parser.add_argument(
        "--mysql",
        default="mysql://root@127.0.0.1:3306",
        help="an account on the local MariaDB that may create databases and users",
    )
    parser.add_argument(
        "--database", help="the stack's database (default: cockpit_stack_ + the compose one's)"
    )
    parser.add_argument(
        "--db-user", help="the stack's database user (default: cockpit_stack_ + the compose one)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and user it made when it stops"
    )
    parser.add_argument(
        "--clean", action="store_true",
        help="drop what a stack left in --run-dir's record (after a kill) and exit",
    )  # fmt: skip
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        help="the compose secrets' files, made here when missing (default: deploy/secrets)",
    )
    return parser.parse_args(argv)


def names_of(opts: argparse.Namespace, topology: Topology) -> mariadb.Names:
    """The database and user: as given, else the compose ones with the stack's prefix.

    So no other project's objects on a shared server are touched.
    """
    compose = mariadb.compose_names(topology.services["mariadb"])
    return mariadb.Names(
        opts.database or f"{PREFIX}{compose.database}", opts.db_user or f"{PREFIX}{compose.user}"
    )


def prepare(opts: argparse.Namespace) -> tuple[Topology, list[Process]]:
    """Read the compose file, set up MariaDB, write the rewritten files; the processes."""
    secrets_dir = opts.secrets_dir or opts.compose.parent / secrets.DIRECTORY
    topology = load(opts.compose, opts.port_offset, secrets_dir)
    if "mariadb" not in topology.services:
        raise TopologyError(f"{opts.compose}: no mariadb service")
    made = secrets.generate(secrets_dir)
    if made:
        log.info("stack secrets made", directory=str(secrets_dir), files=len(made))
    local = [n for n in topology.services if n not in SKIPPED and n != "mariadb"]
    order = start_order(topology, local)
    names = names_of(opts, topology)
    server = mariadb.Server.parse(opts.mysql)
    mariadb.point_at(topology, "mariadb", server, names)
    run_dir = opts.run_dir.resolve()
    materialise(topology, ["mariadb", *order], run_dir)
    created = mariadb.prepare(topology, "mariadb", server, names)
    # Recorded at once: a stack killed before it could drop them is cleaned up later.
    _record(run_dir, names, created)
    log.info("stack database", database=names.database, user=names.user,
             seeded=created.database, new_user=created.user)  # fmt: skip
    for name, why in SKIPPED.items():
        log.info("stack service skipped", service=name, why=why)
    return topology, [process(topology, name, run_dir) for name in order]


def _die_with_parent() -> None:
    """In the child: a SIGTERM when the stack dies, even by SIGKILL (Linux; elsewhere a no-op).

    So no service is left running without the stack that started it.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _start(plan: Process, run_dir: Path) -> asyncio.subprocess.Process:
    output = run_dir / f"{plan.name}.log"
    with output.open("ab") as sink:
        # A session of its own: Ctrl-C reaches only us, and we stop each child once, in
        # order (a second signal makes the exporter skip its graceful shutdown).
        child = await asyncio.create_subprocess_exec(
            *plan.argv, stdout=sink, stderr=sink, env={**os.environ, **plan.env},
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    log.info("stack service started", service=plan.name, pid=child.pid, log=str(output))
    return child


async def _ready(plan: Process, child: asyncio.subprocess.Process) -> None:
    deadline = asyncio.get_running_loop().time() + READY_WITHIN
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while asyncio.get_running_loop().time() < deadline:
            if child.returncode is not None:
                raise TopologyError(f"{plan.name} exited with {child.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(plan.ready) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise TopologyError(f"{plan.name}: {plan.ready} did not answer 200 in {READY_WITHIN:.0f}s")


async def _stop(children: dict[str, asyncio.subprocess.Process]) -> None:
    for name, child in reversed(children.items()):
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), STOP_WITHIN)
            except TimeoutError:
                child.kill()
                await child.wait()
        log.info("stack service stopped", service=name, code=child.returncode)


async def run(plans: list[Process], run_dir: Path) -> int:
    """Start every process, report ready, run until a signal or until one of them exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: dict[str, asyncio.subprocess.Process] = {}
    try:
        for plan in plans:
            children[plan.name] = await _start(plan, run_dir)
            await _ready(plan, children[plan.name])
        log.info("stack ready", **{p.name: p.ready for p in plans})
        exited = [asyncio.ensure_future(c.wait()) for c in children.values()]
        waiting = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiting, *exited], return_when=asyncio.FIRST_COMPLETED)
        for task in (waiting, *exited):
            task.cancel()
        dead = [n for n, c in children.items() if c.returncode is not None]
        if dead:
            log.error("stack service exited", services=dead, logs=str(run_dir))
            return EXIT_FAILED
        return 0
    finally:
        await _stop(children)


def _record(run_dir: Path, names: mariadb.Names, created: mariadb.Created) -> None:
    record = {"database": names.database, "user": names.user,
              "created": {"database": created.database, "user": created.user}}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECORD).write_text(json.dumps(record), encoding="utf-8")


def clean(opts: argparse.Namespace) -> None:
    """Drop what the record in the run directory says this stack made, then the record."""
    path = opts.run_dir.resolve() / RECORD
    if not path.exists():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    names = mariadb.Names(record["database"], record["user"])
    created = mariadb.Created(**record["created"])
    mariadb.drop(mariadb.Server.parse(opts.mysql), names, created)
    path.unlink()
    log.info("stack dropped", database=names.database if created.database else None,
             user=names.user if created.user else None)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """`make stack`: the compose topology on this machine until Ctrl-C, then cleaned up."""
    opts = options(argv)
    logs.configure("info", "logfmt")
    try:
        if opts.clean:
            clean(opts)
            return 0
        _, plans = prepare(opts)
        try:
            return asyncio.run(run(plans, opts.run_dir.resolve()))
        finally:
            if not opts.keep:
                clean(opts)
    except TopologyError as exc:
        return fail(f"stack: {exc}", EXIT_FAILED)
    except (OSError, MySQLError) as exc:
        return fail(f"stack: {type(exc).__name__}: {exc}", EXIT_FAILED)
