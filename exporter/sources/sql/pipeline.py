"""MySQL runs due together share writes: a connection sends many runs' commands at once.

Each of a server's connections sends every waiting run's COM_INIT_DB and COM_QUERY in one
write, then reads the replies in order.

On a server shared by many tenant databases most of a run's CPU went to the write and the
wake-up for its reply, not to the query (docs/performance.md): one round trip per batch
instead of one per run. Every run still selects its own database (COM_INIT_DB) right before
its query, whatever ran before it on that connection, so results never mix between tenants.
The replies are read by wire.py, many packets per wake-up.
"""

import asyncio
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pymysql
import structlog

from exporter.errors import CollectionError
from exporter.sources.sql import internals, protocol, wire
from exporter.sources.sql.deadlines import Deadlines
from exporter.sources.sql.engines import MAX_AGE, Lease, Server, cause

log = structlog.get_logger(__name__)
MAX_BATCH = 32
# A statement known to finish within this shares batches; an unknown or slower one is sent
# alone, so a slow tenant holds one connection, never the runs queued behind it.
BATCHABLE_UNDER = 0.1
# A connection silent this long past the longest timeout of its batch (its KILL QUERY
# included) is dropped.
STALL_GRACE = 10.0
Reply = wire.Result
# Bytes one socket read takes at most. asyncio's 256 KiB is our mmap threshold (memory.py):
# each read mapped a fresh buffer, faulted its pages in and unmapped it (the read was 7% of
# py-spy's samples at 1,000 tenants); a batch's replies are tens of KB, a larger one takes
# more reads.
READ_SIZE = 64 * 1024


@dataclass(eq=False)
class Request:
    """One run's statement on its way through a connection."""

    database: str | None
    sql: str
    values: tuple[object, ...]
    timeout: float
    future: asyncio.Future[Reply]
    alone: bool = True
    elapsed: float | None = None  # from its turn on the connection to its reply
    # Wall-clock times (ns) for its spans: queued, its turn on a connection, its reply.
    queued_ns: int = field(default_factory=time.time_ns)
    turn_ns: int | None = None
    reply_ns: int | None = None
    retried: bool = False
    thread_id: int | None = None  # set while the server runs this request's statement
    known: wire.Whole | None = None  # the last run's result set, if the source kept it


class _BrokenError(Exception):
    """The connection failed mid-batch; the cause is the driver's."""


@dataclass
class Pipeline:
    """The queue of a MySQL server's runs and the connections (at most its cap) serving it."""

    server: Server
    _queue: deque[Request] = field(default_factory=deque)
    _workers: set[asyncio.Task[None]] = field(default_factory=set)
    _waiting: int = 0  # workers idle for want of work
    _live: int = 0  # workers started and not finished (done callbacks run late)
    _work: asyncio.Event = field(default_factory=asyncio.Event)
    deadlines: Deadlines = field(default_factory=Deadlines)  # its statements' timeouts

    def submit(
        self,
        database: str | None,
        sql: str,
        values: tuple[object, ...],
        timeout: float,
        *,
        alone: bool,
        known: wire.Whole | None = None,
    ) -> Request:
        """Queue a statement; its reply (or error) arrives on `request.future`.

        `known`: the result set its last run got, recognised cheaply if it comes again.
        """
        if len(sql) >= protocol.ONE_PACKET:
            raise CollectionError("query", "the statement is longer than 16 MiB")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        request = Request(database, sql, values, timeout, future, alone, known=known)
        self._queue.append(request)
        self._kick()
        return request

    def _kick(self) -> None:
        self._work.set()
        if self._waiting == 0 and self._live < self.server.cap and self._queue:
            self._live += 1
            task = asyncio.get_running_loop().create_task(self._serve())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _serve(self) -> None:
        """One connection's life: take batches until idle too long (or too old), then close."""
        connected = False
        try:
            connected = await self._connected()
        finally:
            self._live -= 1
        if connected and self._queue:
            # It left work behind (requeued after a lost connection, or retired while runs
            # came in): make sure a connection takes it. Not after a failed connect: that
            # would retry in a loop while the server backs off.
            self._kick()

    async def _connected(self) -> bool:
        try:
            lease = await self.server.open_connection()
        except CollectionError as exc:
            if self._live <= 1:  # nobody else can serve what waits
                self._fail_queue(exc)
            return False
        try:
            while await self._next_work(lease):
                batch = self._take_batch()
                if batch:
                    await self._run_batch(lease, batch)
        except _BrokenError as exc:
            await self.server.discard(lease)
            log.warning("server connection lost", server=self.server.display, error=str(exc))
            return True
        except BaseException:
            await self.server.discard(lease)
            raise
        self.server.retire(lease)
        return True

    async def _next_work(self, lease: Lease) -> bool:
        """Whether to go on: there is work, or it came before the idle timeout."""
        if time.monotonic() - lease.created > MAX_AGE:
            return False  # replaced so connections follow DNS and failovers
        if self._queue:
            return True
        self._work.clear()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.server.idle_timeout):
                while not self._queue:
                    await self._work.wait()
                    self._work.clear()
        except TimeoutError:
            # Idle connections above one close; the last stays for the next runs.
            return self._live <= 1
        finally:
            self._waiting -= 1
        return True

    def _take_batch(self) -> list[Request]:
        batch: list[Request] = []
        while self._queue and len(batch) < MAX_BATCH:
            if batch and (batch[0].alone or self._queue[0].alone):
                break  # a statement not known to be quick goes in a batch of its own
            request = self._queue.popleft()
            if not request.future.done():  # a run that timed out while queued is gone
                batch.append(request)
        return batch

    async def _run_batch(self, lease: Lease, batch: list[Request]) -> None:
        connection = internals.of(lease.conn)
        batch, packets = _bound(connection, batch)
        if not batch:
            return
        try:
            internals.write(connection, b"".join(packets))
        except Exception as exc:
            self._requeue_or_fail(batch, exc, stale=lease.reused)
            raise _BrokenError(cause(exc)) from exc
        thread = int(connection.thread_id())
        if lease.reader is None:
            lease.reader = wire.Reader(internals.stream(connection))
            internals.read_at_most(connection, READ_SIZE)
        reader = lease.reader
        turn, turn_ns = time.monotonic(), time.time_ns()
        # One timer for the batch, not one per request: a batch shares only statements known
        # to be quick, so a connection silent past the longest timeout (plus grace) is dead.
        limit = max(request.timeout for request in batch) + STALL_GRACE
        index = 0
        try:
            async with asyncio.timeout(limit):
                for index, request in enumerate(batch):  # noqa: B007 (read after the loop)
                    request.thread_id, request.turn_ns = thread, turn_ns
                    # Most replies of a batch have all arrived: taken without awaiting.
                    use = request.database is not None
                    outcome: Reply | BaseException | None
                    outcome = wire.ready_reply(reader, connection, use, request.known)
                    if outcome is None:
                        outcome = await _read_reply(reader, connection, request)
                    request.thread_id = None
                    request.elapsed, turn = time.monotonic() - turn, time.monotonic()
                    request.reply_ns = turn_ns = time.time_ns()
                    _settle(request, outcome)
        except Exception as exc:
            # The first reply on a kept connection failing means the server had closed
            # it (restart, wait_timeout): those runs get one fresh connection. Anything
            # else (a malformed packet, a silent server) fails the rest of the batch.
            self._requeue_or_fail(batch[index:], exc, stale=lease.reused and index == 0)
            raise _BrokenError(cause(exc)) from exc
        finally:
            batch[index].thread_id = None
        lease.reused = True

    def _requeue_or_fail(self, requests: list[Request], exc: BaseException, stale: bool) -> None:
        error = CollectionError("query", f"query failed: {cause(exc)}")
        for request in reversed(requests):
            if request.future.done():
                continue
            if stale and not request.retried:
                request.retried = True
                self._queue.appendleft(request)
            else:
                request.future.set_exception(error)

    def _fail_queue(self, error: CollectionError) -> None:
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(error)

    async def close(self) -> None:
        """Stop the connections; runs still waiting fail."""
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._fail_queue(CollectionError("query", "the server's connections were closed"))


def _bound(driver: Any, batch: list[Request]) -> tuple[list[Request], list[bytes]]:
    """The batch's packets; a request whose parameters cannot be bound fails on its own."""
    kept, packets = [], []
    encoding = driver.encoding
    for request in batch:
        try:
            packets.append(_packets(driver, encoding, request))
        except (TypeError, ValueError, UnicodeError) as exc:
            message = f"cannot bind the query parameters: {exc}"
            _settle(request, CollectionError("query", message))
            continue
        kept.append(request)
    return kept, packets


def _packets(driver: Any, encoding: str, request: Request) -> bytes:
    if request.values:
        sql = protocol.bind(driver, request.sql, request.values)
        query = protocol.command(protocol.COM_QUERY, sql.encode(encoding, "surrogateescape"))
    else:
        query = _query_packet(request.sql, encoding)
    if request.database is None:
        return query
    return _use_packet(request.database, encoding) + query


# The same statements go to the same tenant databases run after run: their packets are made
# once (encoding and framing them was a few percent of a run's CPU). A database's entry is
# about 200 bytes (tracemalloc), little beside what the store holds per tenant; statements are
# as many as the config has queries.
@functools.lru_cache(maxsize=1024)
def _query_packet(sql: str, encoding: str) -> bytes:
    # `%` of nothing, as binding does: the driver text writes a literal % as %%.
    return protocol.command(protocol.COM_QUERY, (sql % ()).encode(encoding, "surrogateescape"))


@functools.lru_cache(maxsize=65536)
def _use_packet(database: str, encoding: str) -> bytes:
    return protocol.command(protocol.COM_INIT_DB, database.encode(encoding))


async def _read_reply(reader: wire.Reader, driver: Any, request: Request) -> Reply | BaseException:
    """The replies to one request's commands: its rows, or the server's error for it."""
    refused: pymysql.MySQLError | None = None
    if request.database is not None:
        try:
            await wire.read_ok(reader, driver)
        except pymysql.MySQLError as exc:
            if protocol.code(exc) >= protocol.CLIENT_ERRORS:
                raise
            refused = exc
    try:
        reply = await wire.read_result(reader, driver)
    except pymysql.MySQLError as exc:
        if protocol.code(exc) >= protocol.CLIENT_ERRORS:
            raise
        return protocol.UseError(refused) if refused is not None else exc
    if refused is not None:
        # The query ran on whatever database the connection had: another tenant's rows.
        return protocol.UseError(refused)
    return reply


def _settle(request: Request, outcome: Reply | BaseException) -> None:
    if request.future.done():  # the run timed out meanwhile: its reply is dropped
        return
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)
