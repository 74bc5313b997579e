"""``redis://``: task state and the event log in Redis, shared by many processes and hosts.

Every process keeps one stream reader (``XREAD BLOCK`` on a connection of its own)
that appends each event, in stream order, to its local :class:`EventLog`; SSE streams
read from there, so a thousand subscribers cost no Redis connection at all.

Keys, each under ``prefix`` (default ``sse_tasks``; standalone Redis, not Cluster):

==================  =============================================================
``P:epoch``         random id of this history; a flushed or replaced Redis gets a new one
``P:events``        the event log: a stream trimmed with ``XADD MAXLEN ~ history``;
                    fields ``e`` epoch, ``t`` event type, ``d`` snapshot JSON
``P:task:<id>``     snapshot hash (``s`` state, ``m`` name, ``d`` JSON, ``i`` event id,
                    ``t`` event type, ``n`` publish token); expires ``retention`` s after
                    the task finishes
``P:tasks``         task ids by creation order (``P:seq`` counts), for ``list_tasks``
``P:finished``      finished ids by finish time: retention and ``max_tasks``
``P:expired``       ids that expired, remembered (at most ``max_tasks``) to answer 410
``P:leases``        ids of unfinished tasks by lease deadline (Redis server time, ms)
==================  =============================================================

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
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.exceptions
from anyio.abc import TaskGroup
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from ..._core import codec
from ..._core.errors import Unavailable
from ..._core.log import EventLog
from ..._core.models import Task, TaskEvent, TaskState, utcnow
from ..base import Broker, EventObserver

__all__ = ["RedisBroker"]

logger = logging.getLogger("sse_tasks.redis")

T = TypeVar("T")
StreamKey = tuple[int, int]

_UNREACHABLE = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (restarting)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica during failover
    OSError,
)
_URL_OPTIONS = ("history", "retention", "max_tasks", "lease", "outage_grace", "prefix", "max_connections")
_BATCH = 1000  # stream entries per XREAD
_BLOCK_MS = 1000  # an idle reader checks the epoch this often
_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
_CATCH_UP = 5.0  # seconds a resuming stream waits for this process to read up to its id
_SWEEP_BATCH = 100

# Both scripts read Redis's clock (TIME), so hosts with skewed clocks agree on leases.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_PUBLISH = (
    _NOW
    + """
-- KEYS: epoch events task tasks seq finished expired leases
-- ARGV: id type state name data terminal epoch? history retention_ms max_tasks lease_ms
--       token lapsed_only prefix
local id = ARGV[1]
local current = redis.call('HMGET', KEYS[3], 's', 'n', 'i')
if current[1] then
  if current[2] == ARGV[12] then return {current[3], 1} end
  if current[1] == 'succeeded' or current[1] == 'failed' or current[1] == 'cancelled' then
    return false
  end
  if ARGV[2] == 'task.queued' then return false end
elseif ARGV[2] ~= 'task.queued' then
  return false
end
if ARGV[13] == '1' then
  local deadline = redis.call('ZSCORE', KEYS[8], id)
  if not deadline or tonumber(deadline) > now then return false end
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[1], epoch)
end
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'e', epoch, 't', ARGV[2], 'd', ARGV[5])
local event_id = epoch .. '-' .. sid
redis.call('HSET', KEYS[3], 's', ARGV[3], 'm', ARGV[4], 'd', ARGV[5], 'i', event_id,
  't', ARGV[2], 'n', ARGV[12])
local retention = tonumber(ARGV[9])
local max_tasks = tonumber(ARGV[10])
if ARGV[2] == 'task.queued' then
  redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), id)
  redis.call('ZADD', KEYS[8], now + tonumber(ARGV[11]), id)
elseif ARGV[6] == '1' then
  redis.call('ZREM', KEYS[8], id)
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('PEXPIRE', KEYS[3], retention)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - retention, 'LIMIT', 0, 100)
  local over = redis.call('ZCARD', KEYS[6]) - max_tasks
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', KEYS[6], 0, over - 1)) do
      table.insert(gone, old)
    end
  end
  for _, old in ipairs(gone) do
    redis.call('DEL', ARGV[14] .. ':task:' .. old)
    redis.call('ZREM', KEYS[4], old)
    redis.call('ZREM', KEYS[6], old)
    redis.call('ZADD', KEYS[7], now, old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(max_tasks + 1))
else
  redis.call('ZADD', KEYS[8], 'XX', now + tonumber(ARGV[11]), id)
end
return {event_id, 0}
"""
)

# ``intact``: 1 if nothing after stream id ARGV[2] was trimmed. Trimming removes the
# oldest entries, so that holds while the entry itself is still there (or, for 0-0,
# while nothing was ever trimmed). An id that is not there may have been trimmed.
_STREAM_INFO = """
local head, intact = '0-0', 1
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  local length, added = 0, -1
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then head = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  if ARGV[2] == '0-0' then
    if added ~= length then intact = 0 end
  elseif #redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2]) == 0 then
    intact = 0
  end
elseif ARGV[2] ~= '0-0' then
  intact = 0
end
"""

_SYNC = (
    """
-- KEYS: epoch events   ARGV: a new epoch (used if there is none yet), the reader's position
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
"""
    + _STREAM_INFO
    + """
return {epoch, head, intact}
"""
)

_HISTORY = (
    """
-- KEYS: epoch events   ARGV: up_to (inclusive) after (exclusive) count
"""
    + _STREAM_INFO
    + """
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], ARGV[1], 'COUNT', ARGV[3])
return {redis.call('GET', KEYS[1]) or '', intact, entries}
"""
)

_RENEW = (
    _NOW
    + """
-- KEYS: leases   ARGV: lease_ms id...
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return #ARGV - 1
"""
)

_LAPSED = (
    _NOW
    + """
-- KEYS: leases   ARGV: limit
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)


class RedisBroker(Broker):
    """Task snapshots and the event log in Redis; any number of processes share them.

    Options come from keyword arguments, else from the URL's query string
    (``redis://host:6379/0?lease=5&history=50000``), else the defaults below; the
    rest of the URL goes to redis-py.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…`` or ``unix://…``.
        history: events the stream (``MAXLEN ~``) and the local ring keep for resuming.
        retention: seconds a finished task's snapshot is kept (Redis key expiry).
        max_tasks: finished tasks kept at most (oldest expire first).
        lease: seconds after its worker stops renewing that an unfinished task is
            marked failed (``WorkerLost``).
        outage_grace: seconds this process retries a state change of a task it runs
            while Redis is unreachable.
        prefix: namespace of every key, so several apps can share one database.
        max_connections: Redis connections for commands (the reader has its own).

    Raises ``ValueError`` for an option out of range.
    """

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
    ) -> None:
        self.url, query = _split_options(url)
        self.history = int(_option(history, query, "history", 10_000, int))
        self.retention = _option(retention, query, "retention", 3600.0, float)
        self.max_tasks = int(_option(max_tasks, query, "max_tasks", 10_000, int))
        self.lease = _option(lease, query, "lease", 10.0, float)
        self.outage_grace = _option(outage_grace, query, "outage_grace", 30.0, float)
        self.prefix = str(_option(prefix, query, "prefix", "sse_tasks", str))
        self.max_connections = int(_option(max_connections, query, "max_connections", 8, int))
        if self.history < 1 or self.max_tasks < 1 or self.max_connections < 1:
            raise ValueError("history, max_tasks and max_connections must be at least 1")
        if not (self.retention >= 0 and self.lease > 0 and self.outage_grace >= 0):
            raise ValueError("retention and outage_grace must be >= 0 and lease > 0")
        self.log = EventLog(self.history)
        #: Names this process's Redis connections (``CLIENT LIST``: ``sse-tasks-<id>``).
        self.worker_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._keys = _Keys(self.prefix)
        self._observer: EventObserver | None = None
        self._redis: Redis | None = None
        self._group: TaskGroup | None = None
        self._epoch: str | None = None
        self._read_from = "0-0"  # stream id the reader continues after
        self._generation = 0  # bumped whenever the log restarts
        self._ready = anyio.Event()
        self._tried = anyio.Event()
        self._connected_since: float | None = None
        self._down_since: float | None = None  # when Redis stopped answering
        self._owned: set[str] = set()  # unfinished tasks queued by this process
        self._closing = False
        self._writes = 0  # publishes in flight: close() lets them finish
        self._writes_done = anyio.Event()
        self._scripts_loaded = False
        self._publish_script: AsyncScript
        self._sync_script: AsyncScript
        self._history_script: AsyncScript
        self._renew_script: AsyncScript
        self._lapsed_script: AsyncScript

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, observer: EventObserver) -> None:
        """Connect and start the stream reader and the lease keeper.

        If Redis is unreachable the server starts anyway: requests that need Redis
        get 503 until the reader connects.
        """
        self._observer = observer
        self._closing = False
        self._epoch = None  # the reader's first sync adopts Redis's history from its head
        self._ready = anyio.Event()  # connected once
        self._tried = anyio.Event()  # the first attempt to connect is over
        self.log.reopen()
        self._redis = self._client(self.max_connections, socket_timeout=5.0)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._read)
        group.start_soon(self._keep_leases)
        with anyio.move_on_after(5.0):
            await self._tried.wait()
        if not self._ready.is_set():
            logger.warning("Redis at %s is unreachable; retrying in the background", self._where)

    async def close(self) -> None:
        """Stop the reader and the lease keeper; let writes in flight finish (a few seconds at most)."""
        self._closing = True
        with anyio.move_on_after(5.0, shield=True):
            while self._writes:
                await self._writes_done.wait()
        group, self._group = self._group, None
        client, self._redis = self._redis, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            if client is not None:
                with anyio.CancelScope(shield=True):
                    await client.aclose()

    def _client(self, connections: int, *, socket_timeout: float) -> Redis:
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=connections,
            timeout=5.0,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            client_name=f"sse-tasks-{self.worker_id}",
            # One quick retry: a connection left over from before a Redis restart
            # fails once. Every write is idempotent (tokens), so a retry is safe.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        )
        client = Redis.from_pool(pool)
        if not self._scripts_loaded:  # scripts run on any client; they need one to be made
            self._publish_script = client.register_script(_PUBLISH)
            self._sync_script = client.register_script(_SYNC)
            self._history_script = client.register_script(_HISTORY)
            self._renew_script = client.register_script(_RENEW)
            self._lapsed_script = client.register_script(_LAPSED)
            self._scripts_loaded = True
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
    def _where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname or parts.path}:{parts.port or ''}".rstrip(":")

    @property
    def _db(self) -> Redis:
        if self._redis is None:
            raise Unavailable("the hub is not running (enter it in the app's lifespan)", code="not_running")
        return self._redis

    async def _call(self, awaitable: Awaitable[T]) -> T:
        """Await a Redis command; unreachable Redis becomes :class:`Unavailable` (503)."""
        try:
            return await awaitable
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from None

    # -- ids ---------------------------------------------------------------------

    def parse_event_id(self, event_id: str) -> StreamKey | None:
        epoch, _, stream_id = event_id.partition("-")
        if epoch != self._epoch:
            return None
        return _stream_key(stream_id)

    async def cursor(self) -> str:
        epoch, head = await self._sync()
        return f"{epoch}-{head}"

    async def _sync(self, client: Redis | None = None, *, reader: bool = False) -> tuple[str, str]:
        """Read the history's epoch and head; adopt a new history if Redis has one.

        The reader also checks that nothing after its position was trimmed while it
        was away; if something was, the log restarts and every stream resyncs.
        """
        args = [secrets.token_hex(4), self._read_from]
        if client is None:
            async with self._connection() as db:
                reply = await self._call(self._sync_script(self._keys.sync, args, client=db))
        else:
            reply = await self._call(self._sync_script(self._keys.sync, args, client=client))
        epoch, head, intact = (_text(part) for part in reply)
        if epoch != self._epoch:
            if self._epoch is not None:
                logger.warning("Redis holds a different history (flushed or replaced): streams resync")
            self._adopt(epoch, head)
        elif reader and intact != "1":
            logger.warning("events were trimmed while this process could not read them: streams resync")
            self._adopt(epoch, head)
        return epoch, head

    def _adopt(self, epoch: str, head: str) -> None:
        self._epoch = epoch
        self._read_from = head
        self._generation += 1
        self.log.restart(_key(head))

    # -- the stream reader -----------------------------------------------------------

    async def _read(self) -> None:
        """Follow the stream into :attr:`log`; reconnect with backoff, resume from the last id."""
        reader = self._client(1, socket_timeout=_BLOCK_MS / 1000 + 10.0)
        delay = _MIN_BACKOFF
        try:
            while True:
                try:
                    await self._sync(reader, reader=True)
                    if delay > _MIN_BACKOFF:
                        logger.info("reconnected to Redis at %s", self._where)
                    self._connected_since = time.monotonic()
                    self._down_since = None
                    self._ready.set()
                    self._tried.set()
                    delay = _MIN_BACKOFF
                    await self._follow(reader)
                except (Unavailable, *_UNREACHABLE) as exc:
                    if self._connected_since is not None or delay == _MIN_BACKOFF:
                        logger.warning("lost Redis at %s (%s); reconnecting", self._where, exc)
                except Exception:
                    logger.exception("the Redis stream reader failed; restarting it")
                self._tried.set()
                self._connected_since = None
                if self._down_since is None:
                    self._down_since = time.monotonic()
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()

    async def _follow(self, reader: Redis) -> None:
        keys = self._keys
        while True:
            generation = self._generation
            reply = await reader.execute_command(  # type: ignore[no-untyped-call]
                "XREAD", "COUNT", _BATCH, "BLOCK", _BLOCK_MS, "STREAMS", keys.events, self._read_from
            )
            if generation != self._generation:
                continue  # the log restarted meanwhile: read on from its new base
            if not reply:
                epoch = await reader.get(keys.epoch)
                if epoch is None or _text(epoch) != self._epoch:
                    await self._sync(reader, reader=True)
                continue
            for stream_id, fields in reply[0][1]:
                self._read_from = _text(stream_id)
                if _text(fields.get(b"e", b"")) != self._epoch:
                    await self._sync(reader, reader=True)
                    break
                event = self._event(stream_id, fields)
                if event is not None:
                    self.log.append(event)
                    self._observed(event)

    def _event(self, stream_id: bytes | str, fields: dict[bytes, bytes]) -> TaskEvent | None:
        sid = _text(stream_id)
        event_id = f"{self._epoch}-{sid}"
        try:
            event_type = _text(fields[b"t"])
            record = codec.loads(fields[b"d"])
            task = Task.from_record({**record, "event_id": event_id, "event_type": event_type})
        except (KeyError, ValueError, TypeError):
            logger.error("skipping malformed stream entry %s", sid)
            return None
        return TaskEvent(event_id, _key(sid), event_type, task)

    def _observed(self, event: TaskEvent) -> None:
        if event.task.terminal:
            self._owned.discard(event.task.id)
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:
                logger.exception("event observer failed on %r", event)

    async def events_after(self, key: Any) -> list[TaskEvent] | None:
        log = self.log
        newest, floor, generation = log.newest, log.floor, self._generation
        if newest is None:
            return None
        if key > newest:
            # Newer than this process has read (written through another one): wait for it.
            return [] if await self._catch_up(key, generation) else None
        if floor is None or key >= floor:
            return None
        args: list[str | int] = [_stream_id(floor), _stream_id(key), self.history + 1]
        async with self._connection() as db:
            reply = await self._call(self._history_script(self._keys.sync, args, client=db))
        epoch, intact, entries = reply
        if _text(epoch) != self._epoch or intact != 1 or generation != self._generation:
            return None  # another history, or some of what followed ``key`` was trimmed
        events = []
        for stream_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if _text(fields.get(b"e", b"")) != self._epoch:
                return None
            event = self._event(stream_id, fields)
            if event is not None:
                events.append(event)
        if not events or events[-1].key != floor:
            return None
        return events

    async def _catch_up(self, key: StreamKey, generation: int) -> bool:
        """Wait (bounded) until the reader has appended the event ``key``; False if it never will."""
        _, head = await self._sync()
        if key > _key(head):
            return False  # never written in this history
        with anyio.move_on_after(_CATCH_UP):
            while generation == self._generation and not self.log.closed:
                newest = self.log.newest
                if newest is not None and newest >= key:
                    return True
                await self.log.wait(self.log.head)
        return False

    # -- tasks -------------------------------------------------------------------

    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        if self._writes == 0:
            self._writes_done = anyio.Event()
        self._writes += 1
        try:
            return await self._publish(task, event_type)
        finally:
            self._writes -= 1
            if self._writes == 0:
                self._writes_done.set()

    async def _publish(self, task: Task, event_type: str, *, lapsed_only: bool = False) -> TaskEvent | None:
        record = task.to_record()
        del record["event_id"], record["event_type"]
        keys = self._keys
        args = [
            task.id,
            event_type,
            task.state.value,
            task.name,
            codec.dumps(record),
            "1" if task.terminal else "0",
            secrets.token_hex(4),
            self.history,
            max(0, round(self.retention * 1000)),
            self.max_tasks,
            max(1, round(self.lease * 1000)),
            secrets.token_hex(8),  # makes a retried write idempotent
            "1" if lapsed_only else "0",
            self.prefix,
        ]
        publish_keys = [
            keys.epoch,
            keys.events,
            keys.task(task.id),
            keys.tasks,
            keys.seq,
            keys.finished,
            keys.expired,
            keys.leases,
        ]
        # Only the runner of a task retries: a submission or a remote cancel fails fast.
        retry = task.id in self._owned and event_type != "task.queued" and not lapsed_only
        grace = self.outage_grace if event_type != "task.progress" else math.inf
        delay = _MIN_BACKOFF
        while True:
            try:
                async with self._connection() as db:
                    reply = await self._publish_script(publish_keys, args, client=db)
                self._down_since = None
                break
            except _UNREACHABLE as exc:
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                # The grace counts from the start of the outage, so many writes waiting
                # one after another (a shutdown) do not wait ``outage_grace`` each.
                if not retry or self._closing or now - self._down_since >= grace:
                    if retry:
                        self._owned.discard(task.id)  # its lease lapses: WorkerLost, later
                        logger.error("giving up on %s of task %s: Redis unreachable", event_type, task.id)
                    raise _unavailable(exc) from None
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        if reply is None:
            self._owned.discard(task.id)
            return None
        event_id = _text(reply[0])
        if not lapsed_only:
            if event_type == "task.queued":
                self._owned.add(task.id)
            elif task.terminal:
                self._owned.discard(task.id)
        epoch, _, stream_id = event_id.partition("-")
        if epoch != self._epoch:
            try:
                await self._sync()  # Redis has a new history: adopt it now
            except Unavailable:
                pass  # the reader adopts it once it reconnects
        stored = task.evolve(event_id=event_id, event_type=event_type)
        return TaskEvent(event_id, _key(stream_id), event_type, stored)

    async def get(self, task_id: str) -> Task | None:
        async with self._connection() as db:
            fields = await self._call(db.hmget(self._keys.task(task_id), ["d", "i", "t"]))
        task = _task(fields)
        if task is not None:
            await self._check_epoch([task])
        return task

    async def expired(self, task_id: str) -> bool:
        keys = self._keys
        async with self._connection() as db, db.pipeline(transaction=False) as pipe:
            pipe.exists(keys.task(task_id))
            pipe.zscore(keys.expired, task_id)
            pipe.zscore(keys.tasks, task_id)
            exists, expired, indexed = await self._call(pipe.execute())
        return not exists and (expired is not None or indexed is not None)

    async def list_tasks(
        self, *, state: TaskState | None = None, name: str | None = None, limit: int = 100
    ) -> list[Task]:
        keys = self._keys
        want_state = None if state is None else state.value.encode()
        want_name = None if name is None else name.encode()
        page = limit if state is None and name is None else max(limit, 500)
        found: list[Task] = []
        start = 0
        while len(found) < limit:
            async with self._connection() as db:
                ids = await self._call(db.zrevrange(keys.tasks, start, start + page - 1))
                if not ids:
                    break
                start += len(ids)
                async with db.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.hmget(keys.task(_text(task_id)), ["s", "m", "d", "i", "t"])
                    rows = await self._call(pipe.execute())
            for row in rows:
                if row[2] is None:
                    continue  # expired, not yet swept from the index
                if want_state not in (None, row[0]) or want_name not in (None, row[1]):
                    continue
                task = _task(row[2:])
                if task is not None:
                    found.append(task)
                    if len(found) >= limit:
                        break
        await self._check_epoch(found)
        return found

    async def _check_epoch(self, tasks: list[Task]) -> None:
        """A snapshot from a history this process has not adopted yet makes it adopt it now."""
        prefix = f"{self._epoch}-"
        if any(task.event_id and not task.event_id.startswith(prefix) for task in tasks):
            await self._sync()

    # -- leases ------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew the leases of this process's tasks; fail tasks whose worker is gone."""
        while True:
            await anyio.sleep(self.lease / 4)
            try:
                if self._owned:
                    lease_ms = max(1, round(self.lease * 1000))
                    await self._renew_script([self._keys.leases], [lease_ms, *self._owned], client=self._db)
                since = self._connected_since
                if since is not None and time.monotonic() - since >= self.lease:
                    await self._sweep()
            except (Unavailable, *_UNREACHABLE):
                pass  # the reader reports outages
            except Exception:
                logger.exception("lease upkeep failed")

    async def _sweep(self) -> None:
        leases = self._keys.leases
        lapsed = await self._lapsed_script([leases], [_SWEEP_BATCH], client=self._db)
        for raw in lapsed:
            task_id = _text(raw)
            if task_id in self._owned:
                continue  # this process is alive: its renewal is merely late
            task = await self.get(task_id)
            if task is None or task.terminal:
                await self._db.zrem(leases, task_id)  # stale: that task never changes again
                continue
            error = {
                "type": "WorkerLost",
                "message": "the worker running this task stopped; its lease lapsed",
            }
            failed = task.evolve(state=TaskState.FAILED, finished_at=utcnow(), error=error)
            if await self._publish(failed, "task.failed", lapsed_only=True) is not None:
                logger.warning("task %s failed: its worker stopped renewing its lease", task_id)


class _Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.events = f"{prefix}:events"
        self.tasks = f"{prefix}:tasks"
        self.seq = f"{prefix}:seq"
        self.finished = f"{prefix}:finished"
        self.expired = f"{prefix}:expired"
        self.leases = f"{prefix}:leases"
        self.sync = [self.epoch, self.events]

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"


def _task(fields: list[Any]) -> Task | None:
    """A snapshot from the hash fields ``d``, ``i``, ``t``."""
    data, event_id, event_type = fields
    if data is None:
        return None
    record = codec.loads(data)
    return Task.from_record({**record, "event_id": _text(event_id), "event_type": _text(event_type)})


def _stream_key(stream_id: str) -> StreamKey | None:
    ms, _, seq = stream_id.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    if len(ms) > 20 or len(seq) > 20:
        return None
    return int(ms), int(seq)


def _key(stream_id: str | bytes) -> StreamKey:
    key = _stream_key(_text(stream_id))
    if key is None:
        raise ValueError(f"not a stream id: {stream_id!r}")
    return key


def _stream_id(key: StreamKey) -> str:
    return f"{key[0]}-{key[1]}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unavailable(exc: BaseException) -> Unavailable:
    message = f"the task broker (Redis) is unreachable: {exc}"
    return Unavailable(message, code="broker_unavailable", retry_after=2)


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take this broker's options out of the URL's query; redis-py gets the rest."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in pairs if name in _URL_OPTIONS}
    rest = [(name, value) for name, value in pairs if name not in _URL_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _option(given: Any, query: dict[str, str], name: str, default: Any, kind: type) -> Any:
    if given is not None:
        return kind(given)
    if name in query:
        try:
            return kind(query[name])
        except ValueError:
            message = f"broker URL option {name}={query[name]!r} is not a valid {kind.__name__}"
            raise ValueError(message) from None
    return default
