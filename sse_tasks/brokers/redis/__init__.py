"""``redis://``: task state and the event log in Redis, shared by many processes and hosts.

Every process keeps one stream reader (``XREAD BLOCK`` on a connection of its own)
that appends each event, in order, to its local :class:`EventLog`; SSE streams read
from there, so a thousand subscribers cost no Redis connection at all. The reader
reads the shared log of state changes, and the output stream of a task only while a
client of this process follows that task's output (:mod:`.outputs`): a process pays
for the output its own clients receive.

Keys, each under ``prefix`` (default ``sse_tasks``; on a Redis Cluster ``{prefix}``, a
hash tag that puts every key of the broker in one slot, see :mod:`.cluster`):

==================  =============================================================
``P:log:epoch``     random id of this history; a flushed or replaced Redis gets a new one
``P:log:last``      the last event id given: one id space numbers the log and every
                    output stream (``next_ids.lua``), so all events are totally ordered
``P:log``           the log of state changes: a stream trimmed with ``XADD MAXLEN ~
                    history``; fields ``e`` epoch, ``t`` event type, ``k`` task id,
                    ``d`` snapshot JSON
``P:out:<id>``      the task's output: a stream, one entry (``c``: the chunk's JSON) per
                    ``task.output`` event, its id the event's; bounded by the task's
                    output limits, expires with the task
``P:task:<id>``     snapshot hash (``s`` state, ``m`` name, ``d`` JSON, ``i`` event id,
                    ``t`` event type, ``n`` publish token, ``o`` output token); expires
                    ``retention`` s after the task finishes
``P:tasks``         task ids by creation order (``P:seq`` counts), for ``list_tasks``
``P:finished``      finished ids by finish time: retention and ``max_tasks``
``P:expired``       ids that expired, remembered (at most ``max_tasks``) to answer 410
``P:leases``        ids of unfinished tasks by lease deadline (Redis server time, ms)
``P:refused:<id>``  a task the hub refused (it answered 503): never created, its late
                    message discarded; expires after ``retention``, a day at least
==================  =============================================================

The layout before output streams kept output in the shared ``P:events`` stream under
``P:epoch``: a process of this version starts a new history beside it (every stream
resyncs once, with ``reset`` and snapshots) and never continues an id from it.

Event ids are ``<epoch>-<ms>-<seq>``: the stream id behind the history's epoch. An
id from another history (Redis flushed, restarted empty or replaced) does not parse,
so a resuming client is resynced instead of continued in the wrong history.

Leases: the process that queues a task owns it and renews its lease every
``lease / 4`` s. Any process that finds a lease older than its deadline marks the task
``failed`` with ``{"type": "WorkerLost", …}``, through the same compare-and-set as
every other event. A process sweeps only after it has been connected for a full
lease period, so owners that were cut off by the same outage renew first.

Outages: reads and submissions fail fast with :class:`Unavailable`
(``broker_unavailable``, HTTP 503). Events of tasks this process runs are retried
with backoff: state changes for up to ``outage_grace`` s, progress until the task
ends (only the latest value is then published). Every write carries a token, so a
retried write that had in fact succeeded is not applied twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._core import codec
from ..._core.errors import Unavailable
from ..._core.log import EventLog, OutputFollow
from ..._core.models import OUTPUT_EVENT, MalformedEvent, OutputChunk, Task, TaskEvent, TaskState
from ..base import Broker, EventObserver
from .cluster import ClusterURL, hash_tagged, is_cluster, pool_arguments
from .keys import Keys
from .leases import LeaseKeeper
from .link import UNREACHABLE, Link, call, unavailable, wrong_kind
from .options import check_settings, option, split_options
from .partitioned import (
    Partitions,
    PartitionView,
    partition_prefixes,
    placed,
    placed_follow,
    read_back_all,
    start_all,
)
from .reader import MAX_BACKOFF, MIN_BACKOFF, Ring, StreamKey, StreamReader, key
from .records import chunks_of, data, task_or_none, text
from .scripts import Script, Scripts
from .tokens import Tokens
from .wire import NO_SETINFO, AsyncWire

__all__ = ["RedisBroker"]

logger = logging.getLogger("sse_tasks.redis")

#: Seconds (at least) a refused id is remembered: a message can reach a worker that late.
REFUSAL_TTL = 86400.0
#: Partitions at most: the id of a position in the log names one stream id in each.
MAX_PARTITIONS = 12


class RedisBroker(Broker):
    """Task snapshots and the event log in Redis; any number of processes share them.

    Options come from keyword arguments, else from the URL's query string
    (``redis://host:6379/0?lease=5&history=50000``), else the defaults below; the
    rest of the URL goes to redis-py.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix://…``, or
            ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://``) for a
            Redis Cluster.
        history: events the stream (``MAXLEN ~``) and the local ring keep for resuming.
        retention: seconds a finished task's snapshot is kept (Redis key expiry).
        max_tasks: finished tasks kept at most (oldest expire first).
        lease: seconds after its worker stops renewing that an unfinished task is
            marked failed (``WorkerLost``).
        outage_grace: seconds this process retries a state change of a task it runs
            while Redis is unreachable.
        prefix: namespace of every key, so several apps can share one database.
        max_connections: Redis connections for reads, and as many for writes (the reader
            has its own).
        partitions: how many partitions the log and the tasks are split into (see
            :mod:`.partitioned`); 1 by default, 3 on a Redis Cluster. Every process of a
            deployment must use the same number.

    Raises ``ValueError`` for an option out of range.
    """

    def __new__(cls, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> RedisBroker:
        if cls is RedisBroker and _partitions(url, options.get("partitions")) > 1:
            cls = PartitionedRedisBroker
        return super().__new__(cls)

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        history: int | None = None,
        retention: float | None = None,
        max_tasks: int | None = None,
        lease: float | None = None,
        outage_grace: float | None = None,
        prefix: str | None = None,
        max_connections: int | None = None,
        partitions: int | None = None,
    ) -> None:
        self._configure(
            url, history, retention, max_tasks, lease, outage_grace, prefix, max_connections, partitions
        )
        if self.partitions != 1:
            raise ValueError("a RedisBroker of one partition was asked for several")
        self.log = EventLog(self.history)
        #: What the reader appends to: :attr:`log`, or this partition's view of a
        #: partitioned broker's log (:meth:`share_log`).
        self._ring: Ring = self.log
        self._setup()

    def _configure(
        self,
        url: str,
        history: int | None,
        retention: float | None,
        max_tasks: int | None,
        lease: float | None,
        outage_grace: float | None,
        prefix: str | None,
        max_connections: int | None,
        partitions: int | None,
    ) -> None:
        """Read and check the options (keyword arguments, else the URL's query)."""
        self.partitions = _partitions(url, partitions)
        self.url, query = split_options(url)
        self.history = int(option(history, query, "history", 10_000, int))
        self.retention = option(retention, query, "retention", 3600.0, float)
        self.max_tasks = int(option(max_tasks, query, "max_tasks", 10_000, int))
        self.lease = option(lease, query, "lease", 10.0, float)
        self.outage_grace = option(outage_grace, query, "outage_grace", 30.0, float)
        self.prefix = str(option(prefix, query, "prefix", "sse_tasks", str))
        self.max_connections = int(option(max_connections, query, "max_connections", 8, int))
        if self.history < 1 or self.max_tasks < 1 or self.max_connections < 1:
            raise ValueError("history, max_tasks and max_connections must be at least 1")
        if not (self.retention >= 0 and self.lease > 0 and self.outage_grace >= 0):
            raise ValueError("retention and outage_grace must be >= 0 and lease > 0")
        #: The prefix every key starts with: on a Redis Cluster, ``{prefix}``, a hash tag
        #: that keeps all of them in one slot.
        self.key_prefix = hash_tagged(self.prefix) if is_cluster(self.url) else self.prefix
        self._pool_url, self._pool_extra = self.pool_arguments(asyncio=True)
        try:  # redis-py's own settings in the URL: a bad value is told here, not at connect
            parse_url(self._pool_url)  # type: ignore[no-untyped-call,unused-ignore]
            check_settings(self._pool_url, self._pool_extra, asyncio=True, given=self.url)  # the hub's
            check_settings(*self.pool_arguments(asyncio=False), asyncio=False, given=self.url)  # workers'
        except ValueError as exc:
            raise ValueError(f"Redis URL: {exc}") from None
        #: Names this process's Redis connections (``CLIENT LIST``: ``sse-tasks-<id>``).
        self.worker_id = f"{os.getpid()}-{secrets.token_hex(3)}"

    def _setup(self) -> None:
        self._keys = Keys(self.key_prefix)
        self._scripts = Scripts()
        self._tokens = Tokens()
        self._link = Link()
        self._reader = StreamReader(
            self._ring,
            self._keys,
            self._scripts,
            self._link,
            self._connection,
            self._observed,
            self._where,
            self._expecting,
        )
        self._leases = LeaseKeeper(
            self.lease, self._keys, self._scripts, self._link, self.get, self._fail_lapsed
        )
        self._observer: EventObserver | None = None
        #: Ids of records warned about as not snapshots (see ``task_or_none``).
        self._malformed: set[str] = set()
        self._redis: Redis | None = None
        self._wire: AsyncWire | None = None
        self._group: TaskGroup | None = None
        self._closing = False
        self._writes = 0  # publishes in flight: close() lets them finish
        self._writes_done = anyio.Event()
        self._logging = 0  # state changes in flight (their events come back through the log)
        #: The history (epoch) and key of the newest state change this process stored.
        self._written: tuple[str | None, int, StreamKey] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, observer: EventObserver) -> None:
        """Connect and start the stream reader and the lease keeper.

        If Redis is unreachable the server starts anyway: requests that need Redis
        get 503 until the reader connects.
        """
        await self.launch(observer)
        await self.first_connect()

    async def launch(self, observer: EventObserver) -> None:
        """:meth:`start` without waiting for the reader to connect."""
        self._observer = observer
        self._closing = False
        self._reader.reset()
        self._ring.reopen()
        self._redis = self._client(self.max_connections, socket_timeout=5.0)
        name = f"sse-tasks-{self.worker_id}"
        self._wire = AsyncWire(self._pool_url, self._pool_extra, name, limit=self.max_connections)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        # No retry under the reader: it reconnects itself, and learns its new CLIENT ID then
        # (a registration cuts its blocked read short by that id). No socket timeout either:
        # each turn of the reader has one deadline (``TURN_TIMEOUT``).
        reader = self._client(1, socket_timeout=None, retries=0, single=True)
        group.start_soon(self._reader.run, reader)
        group.start_soon(self._leases.run, self._redis)

    async def first_connect(self) -> None:
        """Wait (5 s at most) until the reader's first attempt to connect is over; log
        a warning if it failed."""
        with anyio.move_on_after(5.0):
            await self._reader.tried.wait()
        if not self._reader.ready.is_set():
            logger.warning("Redis at %s is unreachable; retrying in the background", self._where)

    async def close(self) -> None:
        """Stop the reader and the lease keeper; let writes in flight finish (a few seconds at most)."""
        self._closing = True
        with anyio.move_on_after(5.0, shield=True):
            while self._writes:
                await self._writes_done.wait()
        group, self._group = self._group, None
        client, self._redis = self._redis, None
        wire, self._wire = self._wire, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if client is not None:
                    await client.aclose()
                if wire is not None:
                    await wire.close()

    def _client(
        self, connections: int, *, socket_timeout: float | None, retries: int = 1, single: bool = False
    ) -> Redis:
        """A client of its own pool; ``single``: it keeps one connection for every command."""
        pool = BlockingConnectionPool.from_url(
            self._pool_url,
            **self._pool_extra,
            max_connections=connections,
            timeout=5.0,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            client_name=f"sse-tasks-{self.worker_id}",
            **NO_SETINFO,
            # One quick retry: a connection left over from before a Redis restart
            # fails once. Every write is idempotent (tokens), so a retry is safe.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
            # Named, or redis-py before 6 retries nothing.
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        if not single:
            return Redis.from_pool(pool)
        client = Redis(connection_pool=pool, single_connection_client=True)
        client.auto_close_connection_pool = True  # as from_pool's
        return client

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Redis]:
        """The running broker's client or, outside the lifespan, a client for this call."""
        if self._redis is not None:
            yield self._redis
            return
        client = self._client(1, socket_timeout=5.0)
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    @property
    def keys(self) -> Keys:
        """The names of this broker's Redis keys (under :attr:`prefix`), read-only: for
        tools and tests that look into Redis."""
        return self._keys

    def pool_arguments(self, *, asyncio: bool) -> tuple[str, dict[str, Any]]:
        """The URL and extra settings of a redis-py connection pool (``from_url``) to this
        broker's Redis: for a cluster, to the node that holds its keys. ``asyncio``: for
        ``redis.asyncio``, else for the blocking client."""
        return pool_arguments(self.url, self.key_prefix, asyncio=asyncio)

    @property
    def _where(self) -> str:
        if is_cluster(self.url):
            return f"cluster {ClusterURL(self.url).where}"
        parts = urlsplit(self.url)
        return f"{parts.hostname or parts.path}:{parts.port or ''}".rstrip(":")

    # -- ids and history -------------------------------------------------------------

    def parse_event_id(self, event_id: str) -> Any | None:
        return self._reader.parse_event_id(event_id)

    async def cursor(self) -> str:
        epoch, head = await self._reader.sync()
        return f"{epoch}-{head}"

    @property
    def history_epoch(self) -> str | None:
        """The epoch of the history the reader follows (None before it first synced)."""
        return self._reader.epoch

    async def head(self) -> tuple[str, StreamKey]:
        """The history's epoch and the key of its newest event, as Redis has them now."""
        epoch, head = await self._reader.sync()
        return epoch, key(head)

    @property
    def parts(self) -> list[RedisBroker]:
        """The partitions, each a :class:`RedisBroker` of its own keys (this one alone,
        unless ``partitions`` > 1)."""
        return [self]

    def part_of(self, task_id: str) -> RedisBroker:
        """The partition ``task_id`` lives in."""
        return self

    def partition_index(self, task_id: str) -> int:
        """The index in :attr:`parts` of the partition ``task_id`` lives in."""
        return 0

    def share_log(self, ring: Ring) -> None:
        """Append to ``ring`` (a partition's view of a partitioned broker's log) rather
        than to a log of its own; before :meth:`start`."""
        self._ring = self._reader.log = ring

    async def events_after(self, key: Any) -> list[TaskEvent] | None:
        return await self._reader.events_after(key, self.history)

    async def follow_output(self, task: Task | None) -> OutputFollow:
        """Read ``task``'s output stream (None: every running task's) into :attr:`log`
        until the answer is closed: a process reads output only while a client follows it."""
        return await self._reader.follow(task)

    def _observed(self, event: TaskEvent) -> None:
        if event.terminal:
            try:
                self._leases.owned.discard(event.task_id)
            except MalformedEvent:
                return  # logged as it was decoded: nothing to observe
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:
                logger.exception("event observer failed on %r", event)

    # -- tasks -------------------------------------------------------------------

    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        with self._in_flight():
            return await self._publish(task, event_type)

    async def publish_sent(self, task: Task) -> TaskEvent | None:
        """Store ``queued`` for a task sent to another engine's workers: unleased (it waits
        in the engine's durable queue; the worker that runs it leases it) and not owned
        by this process, which neither renews nor retries its events."""
        with self._in_flight():
            return await self._publish(task, "task.queued", leased=False)

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count a write in flight: :meth:`close` lets it finish."""
        if self._writes == 0:
            self._writes_done = anyio.Event()
        self._writes += 1
        try:
            yield
        finally:
            self._writes -= 1
            if self._writes == 0:
                self._writes_done.set()

    async def _fail_lapsed(self, failed: Task) -> TaskEvent | None:
        return await self._publish(failed, "task.failed", lapsed_only=True)

    def publish_args(
        self,
        task: Task,
        event_type: str,
        *,
        lease: str,
        requeue: bool = False,
        create: Task | None = None,
        lapsed_only: bool = False,
        started: Task | None = None,
    ) -> dict[str, Any]:
        """The arguments of ``publish.lua`` (also written by worker hooks of other engines).

        ``create``: the task's ``queued`` snapshot, stored first if the task is unknown;
        ``started``: its ``running`` snapshot, whose event goes before this one.
        """
        token, new_epoch = self._tokens.take()
        return {
            "id": task.id,
            "type": event_type,
            "state": task.state.value,
            "name": task.name,
            "data": data(task),
            "terminal": "1" if task.terminal else "0",
            "new_epoch": new_epoch,
            "history": self.history,
            "retention_ms": max(0, round(self.retention * 1000)),
            "max_tasks": self.max_tasks,
            "lease_ms": self._leases.lease_ms,
            "lease": lease,
            "requeue": "1" if requeue else "0",
            "created": b"" if create is None else data(create),
            "token": token,  # makes a retried write idempotent
            "lapsed_only": "1" if lapsed_only else "0",
            "prefix": self.key_prefix,
            "started": b"" if started is None else data(started),
        }

    async def read_back(self) -> None:
        """Wait (5 s at most) until the reader has appended this process's last write."""
        with anyio.move_on_after(5.0):
            while self._expecting() and not self._ring.closed:
                with anyio.move_on_after(0.05):
                    await self._ring.wait(self._ring.head)

    def _expecting(self) -> bool:
        """A state change this process writes is not read back yet (see the reader)."""
        if self._logging:
            return True
        written, newest, reader = self._written, self._ring.newest, self._reader
        if written is None or newest is None or written[:2] != (reader.epoch, reader.generation):
            return False  # one from before the log restarted (lost, or before its base) never is
        return bool(written[2] > newest)

    async def _publish(
        self, task: Task, event_type: str, *, lapsed_only: bool = False, leased: bool = True
    ) -> TaskEvent | None:
        self._logging += 1
        try:
            event = await self._publish_state(task, event_type, lapsed_only=lapsed_only, leased=leased)
        finally:
            self._logging -= 1
        if event is not None:
            history, written = (self._reader.epoch, self._reader.generation), self._written
            if written is None or written[:2] != history or event.key > written[2]:
                self._written = (*history, event.key)
        return event

    async def _publish_state(
        self, task: Task, event_type: str, *, lapsed_only: bool, leased: bool
    ) -> TaskEvent | None:
        queued = event_type == "task.queued"
        lease = ("add" if leased else "none") if queued else "xx"
        args = self.publish_args(task, event_type, lease=lease, lapsed_only=lapsed_only)
        keys = self._keys.publish(task.id)
        owned = self._leases.owned
        # Only the runner of a task retries: a submission or a remote cancel fails fast.
        retry = task.id in owned and not queued and not lapsed_only
        grace = self.outage_grace if event_type != "task.progress" else math.inf
        reply = await self._write(task.id, event_type, self._scripts.publish, keys, args, retry, grace)
        if reply is None:
            owned.discard(task.id)
            return None
        event_id = text(reply[0])
        if not lapsed_only:
            if queued and leased:
                owned.add(task.id)
            elif task.terminal:
                owned.discard(task.id)
        epoch, _, stream_id = event_id.partition("-")
        if epoch != self._reader.epoch:
            try:
                await self._reader.sync()  # Redis has a new history: adopt it now
            except Unavailable:
                pass  # the reader adopts it once it reconnects
        stored = task.evolve(event_id=event_id, event_type=event_type)
        return TaskEvent(event_id, key(stream_id), event_type, stored)

    async def _write(
        self,
        task_id: str,
        event_type: str,
        script: Script,
        keys: dict[str, str],
        args: dict[str, Any],
        retry: bool,
        grace: float,
        rest: Sequence[Any] = (),
    ) -> Any:
        """Run a write script; while Redis is unreachable retry it (``retry``) with backoff
        for up to ``grace`` seconds from the start of the outage, else raise 503."""
        delay = MIN_BACKOFF
        while True:
            try:
                reply = await self._run(script, keys, args, rest)
                self._link.answered()
                return reply
            except UNREACHABLE as exc:
                # The grace counts from the start of the outage, so many writes waiting
                # one after another (a shutdown) do not wait ``outage_grace`` each.
                if not retry or self._closing or self._link.failed() >= grace:
                    if retry:
                        self._leases.owned.discard(task_id)  # its lease lapses: WorkerLost, later
                        logger.error("giving up on %s of task %s: Redis unreachable", event_type, task_id)
                    raise unavailable(exc) from None
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            except ResponseError as exc:
                wrong = wrong_kind(exc)
                if wrong is None:
                    raise
                raise wrong from None

    async def _run(
        self, script: Script, keys: dict[str, str], args: dict[str, Any], rest: Sequence[Any]
    ) -> Any:
        """Run a write script: on the running broker's :class:`~.wire.AsyncWire` (the hot path
        of every state change and output batch, with less CPU per command than the
        client's), else through a client for this call."""
        wire = self._wire
        if wire is None:
            async with self._connection() as db:
                return await script(db, keys, args, rest)
        [reply] = await wire.send([script.command(keys, args, rest)], (script.source,))
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def publish_output(self, task: Task, chunk: OutputChunk) -> TaskEvent | None:
        with self._in_flight():
            args = self.output_args(chunk)
            keys = self._keys.publish_output(chunk.task_id)
            retry = chunk.task_id in self._leases.owned
            reply = await self._write(
                chunk.task_id, OUTPUT_EVENT, self._scripts.output, keys, args, retry, self.outage_grace
            )
        if reply is None:
            return None
        event_id = text(reply[0])
        stream_id = event_id.partition("-")[2]
        stored = OutputChunk(chunk.task_id, chunk.seq, chunk.kind, chunk.text, chunk.level, event_id)
        return TaskEvent(event_id, key(stream_id), OUTPUT_EVENT, task, stored)

    async def publish_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> list[TaskEvent] | None:
        """All of ``chunks`` (one task's, in order) in one script run: one round trip, and
        all kept or (the task unknown or terminal) none."""
        if not chunks:
            return []
        reply = await self._write_outputs(chunks)
        if reply is None:
            return None
        events = []
        for row, chunk in zip(reply, chunks, strict=True):
            event_id = text(row)
            stored = OutputChunk(chunk.task_id, chunk.seq, chunk.kind, chunk.text, chunk.level, event_id)
            events.append(TaskEvent(event_id, key(event_id.partition("-")[2]), OUTPUT_EVENT, task, stored))
        return events

    async def keep_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> bool:
        return not chunks or await self._write_outputs(chunks) is not None

    async def _write_outputs(self, chunks: Sequence[OutputChunk]) -> list[Any] | None:
        """Run ``outputs.lua`` for ``chunks``: their event ids, or None (nothing kept)."""
        task_id = chunks[0].task_id
        with self._in_flight():
            args = {"token": secrets.token_hex(8)}
            rest = [codec.dumps(chunk.to_dict()) for chunk in chunks]
            keys = self._keys.publish_output(task_id)
            retry = task_id in self._leases.owned
            reply: list[Any] | None = await self._write(
                task_id, OUTPUT_EVENT, self._scripts.outputs, keys, args, retry, self.outage_grace, rest
            )
        return reply

    async def refuse(self, task_id: str) -> bool:
        """Refuse ``task_id`` for good, as the hub answers 503 for it: it is never created,
        and a worker that receives its message late discards it. False (nothing refused)
        if the task is already stored: a worker took it, so it runs. Raises
        :class:`Unavailable` if Redis stays unreachable for a few seconds."""
        keys = self._keys.refuse(task_id)
        ttl_ms = round(max(self.retention, REFUSAL_TTL) * 1000)
        args = {"id": task_id, "ttl_ms": ttl_ms}
        grace = min(self.outage_grace, 5.0)
        reply = await self._write(task_id, "refusal", self._scripts.refuse, keys, args, True, grace)
        return bool(reply)

    def output_args(self, chunk: OutputChunk) -> dict[str, Any]:
        """The arguments of ``output.lua``."""
        token, _ = self._tokens.take()
        return {"chunk": codec.dumps(chunk.to_dict()), "token": token}

    async def output(self, task_id: str) -> list[OutputChunk]:
        async with self._connection() as db:
            reply = await call(self._scripts.chunks(db, self._keys.chunks(task_id), {}))
        return chunks_of(reply)

    async def get(self, task_id: str) -> Task | None:
        async with self._connection() as db:
            # WRONGTYPE here is one task's key that is not a task record: no task (404),
            # where another of the broker's keys of the wrong kind is a broker that cannot serve.
            fields = await call(_replied(db.hmget(self._keys.task(task_id), ["d", "i", "t"])))
        task = task_or_none(fields, task_id, self._malformed)
        if task is not None:
            await self._reader.check_epoch([task])
        return task

    async def expired(self, task_id: str) -> bool:
        keys = self._keys
        async with self._connection() as db, db.pipeline(transaction=False) as pipe:
            pipe.exists(keys.task(task_id))
            pipe.zscore(keys.expired, task_id)
            pipe.zscore(keys.tasks, task_id)
            exists, expired, indexed = await call(pipe.execute())
        return not exists and (expired is not None or indexed is not None)

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        keys = self._keys
        want_state = None if state is None else state.value.encode()
        want_name = None if name is None else name.encode()
        page = limit if state is None and name is None and not tags else max(limit, 500)
        found: list[Task] = []
        start = 0
        while len(found) < limit:
            async with self._connection() as db:
                ids = await call(db.zrevrange(keys.tasks, start, start + page - 1))
                if not ids:
                    break
                start += len(ids)
                async with db.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.hmget(keys.task(text(task_id)), ["s", "m", "d", "i", "t"])
                    rows = await call(pipe.execute(raise_on_error=False))
            for task_id, row in zip(ids, rows, strict=True):
                if isinstance(row, Exception):
                    task_or_none(row, text(task_id), self._malformed)  # warned about, skipped
                    continue
                if row[2] is None:
                    continue  # expired, not yet swept from the index
                if want_state not in (None, row[0]) or want_name not in (None, row[1]):
                    continue
                task = task_or_none(row[2:], text(task_id), self._malformed)
                if task is not None and all(tag in task.tags for tag in tags):
                    found.append(task)
                    if len(found) >= limit:
                        break
        await self._reader.check_epoch(found)
        return found


class PartitionedRedisBroker(RedisBroker):
    """A :class:`RedisBroker` of several partitions (``RedisBroker(url, partitions=N)`` with
    N > 1 makes one): each task's reads and writes go to its partition; the log, the
    cursor and the list of tasks span them all."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        history: int | None = None,
        retention: float | None = None,
        max_tasks: int | None = None,
        lease: float | None = None,
        outage_grace: float | None = None,
        prefix: str | None = None,
        max_connections: int | None = None,
        partitions: int | None = None,
    ) -> None:
        self._configure(
            url, history, retention, max_tasks, lease, outage_grace, prefix, max_connections, partitions
        )
        prefixes = partition_prefixes(self.prefix, self.partitions, is_cluster(self.url))
        parts = [
            RedisBroker(
                self.url,
                history=self.history,
                retention=self.retention,
                max_tasks=self.max_tasks,
                lease=self.lease,
                outage_grace=self.outage_grace,
                prefix=part_prefix,
                max_connections=self.max_connections,
                partitions=1,
            )
            for part_prefix in prefixes
        ]
        self._partitions: Partitions[RedisBroker] = Partitions(parts, self.history)
        self.log = self._partitions.log
        for index, part in enumerate(parts):
            part.share_log(PartitionView(self._partitions.log, index))
            part.worker_id = self.worker_id  # one name for the process's connections

    @property
    def parts(self) -> list[RedisBroker]:
        return self._partitions.parts

    def part_of(self, task_id: str) -> RedisBroker:
        return self._partitions.of(task_id)

    def partition_index(self, task_id: str) -> int:
        return self._partitions.index(task_id)

    async def start(self, observer: EventObserver) -> None:
        self.log.reopen()
        await start_all(self.parts, observer)

    async def close(self) -> None:
        # Their task groups were entered in order: they are left in the reverse order,
        # every one of them, whatever the others raise.
        async with contextlib.AsyncExitStack() as stack:
            for part in self.parts:
                stack.push_async_callback(part.close)

    async def read_back(self) -> None:
        await read_back_all(self.parts)

    def parse_event_id(self, event_id: str) -> Any | None:
        return self._partitions.parse(event_id)

    async def cursor(self) -> str:
        return await self._partitions.cursor()

    async def events_after(self, key: Any) -> list[TaskEvent] | None:
        return await self._partitions.events_after(key)

    async def follow_output(self, task: Task | None) -> OutputFollow:
        if task is None:
            return await self._partitions.follow_all()
        index = self._partitions.index(task.id)
        return placed_follow(index, await self.parts[index].follow_output(task))

    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        return self._placed(task.id, await self.part_of(task.id).publish(task, event_type))

    async def publish_sent(self, task: Task) -> TaskEvent | None:
        return self._placed(task.id, await self.part_of(task.id).publish_sent(task))

    async def publish_output(self, task: Task, chunk: OutputChunk) -> TaskEvent | None:
        return self._placed(task.id, await self.part_of(task.id).publish_output(task, chunk))

    async def publish_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> list[TaskEvent] | None:
        events = await self.part_of(task.id).publish_outputs(task, chunks)
        index = self._partitions.index(task.id)
        return None if events is None else [placed(index, event) for event in events]

    async def keep_outputs(self, task: Task, chunks: Sequence[OutputChunk]) -> bool:
        return await self.part_of(task.id).keep_outputs(task, chunks)

    async def refuse(self, task_id: str) -> bool:
        return await self.part_of(task_id).refuse(task_id)

    async def output(self, task_id: str) -> list[OutputChunk]:
        return await self.part_of(task_id).output(task_id)

    async def get(self, task_id: str) -> Task | None:
        return await self.part_of(task_id).get(task_id)

    async def expired(self, task_id: str) -> bool:
        return await self.part_of(task_id).expired(task_id)

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        return await self._partitions.list_tasks(state=state, name=name, tags=tags, limit=limit)

    def _placed(self, task_id: str, event: TaskEvent | None) -> TaskEvent | None:
        return None if event is None else placed(self._partitions.index(task_id), event)


def _partitions(url: str, given: int | None) -> int:
    """The partition count of a broker (see :mod:`.partitioned`), checked."""
    default = 3 if is_cluster(url) else 1
    partitions = int(option(given, split_options(url)[1], "partitions", default, int))
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be from 1 to {MAX_PARTITIONS}, not {partitions}")
    return partitions


async def _replied(command: Awaitable[Any]) -> Any:
    """``command``'s reply, or Redis's ``WRONGTYPE`` error, returned (see :meth:`RedisBroker.get`)."""
    try:
        return await command
    except ResponseError as exc:
        if wrong_kind(exc) is None:
            raise
        return exc
