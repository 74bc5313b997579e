"""The stream reader: follows the Redis stream into the process's local event log.

It also decides which history this process is in (the epoch): an id from another
history does not parse, and a flushed or replaced Redis makes the log restart, so
every stream resyncs instead of continuing the wrong history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from bisect import bisect_right
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..._core import codec
from ..._core.errors import Unavailable
from ..._core.log import OutputFollow, local_key
from ..._core.models import (
    OUTPUT_EVENT,
    MalformedEvent,
    OutputChunk,
    Task,
    TaskEvent,
    encode_frame,
    json_frame,
)
from .keys import Keys
from .link import UNREACHABLE, Link, call, not_serving, unavailable, wrong_kind
from .outputs import Followed, OutputFollows, Request, snapshot_task
from .records import task_or_none, text
from .scripts import Scripts
from .wire import deadline, drop

logger = logging.getLogger("sse_tasks.redis")

StreamKey = tuple[int, int]
#: A stream entry as read: its id's key (None: not parsed yet), the entry
#: ``(id, [field, value, …])``, and the task id of its output stream (None: the log's).
Entry = tuple["StreamKey | None", Any, "str | None"]
T = TypeVar("T")
Connect = Callable[[], contextlib.AbstractAsyncContextManager[Redis]]

#: The fields of a chunk as the writers store it (``OutputChunk.to_dict()``).
_CHUNK_FIELDS = ({"id", "seq", "kind", "text"}, {"id", "seq", "kind", "level", "text"})
BATCH = 1000  # stream entries per XREAD
BLOCK_MS = 1000  # an idle reader checks the epoch this often
#: Seconds one turn of the reader (its blocked read and what follows) may take: its
#: connection has no per-command timeout, which redis-py would apply with a task of its
#: own around every send and a timeout around every read.
TURN_TIMEOUT = BLOCK_MS / 1000 + 10.0
#: Seconds the reader waits before reading again right after a read that brought entries
#: (while the streams' wake-up is held anyway): a task's state changes, each a write of
#: its own, then come in one read instead of one read each. A send costs more CPU than
#: anything else the reader does (see ``python -m benchmarks.writes``).
READ_PAUSE = 0.001
MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: While the reader reads on, the streams are woken once no entry came for HOLD_QUIET
#: seconds, or HOLD_WINDOW after the first one waiting (each publish is a round trip of
#: its own, so a task's events arrive apart; see ``benchmarks/README.md``).
HOLD_WINDOW = 0.005
HOLD_QUIET = 0.002
#: While a state change this process wrote is still to be read, the streams wait for it,
#: up to EXPECT_WINDOW after the first event waiting: a task's quick state changes (three
#: round trips for ``queued``, ``running`` and the outcome) go out in one write per stream.
EXPECT_WINDOW = 0.010
_CATCH_UP = 5.0  # seconds a resuming stream waits for this process to read up to its id


class Ring(Protocol):
    """What the reader appends to: the process's :class:`EventLog`, or one partition's view
    of a partitioned log (its keys are that partition's stream keys)."""

    @property
    def first(self) -> int: ...
    @property
    def head(self) -> int: ...
    @property
    def newest(self) -> Any: ...
    @property
    def floor(self) -> Any: ...
    @property
    def closed(self) -> bool: ...
    def append(self, event: TaskEvent) -> None: ...
    def restart(self, base: Any, reason: str = ...) -> None: ...
    def reach(self, key: Any) -> None: ...
    def read(self, position: int, limit: int | None = None) -> list[TaskEvent]: ...
    def hold(
        self,
        window: float,
        quiet: float,
        expecting: Callable[[], bool] | None = None,
        expect_window: float = 0.0,
    ) -> None: ...
    def release(self) -> None: ...
    async def wait(self, position: int) -> None: ...
    def reopen(self) -> None: ...


class StreamReader:
    """One ``XREAD BLOCK`` connection per process, appending every event of the log, and
    of the output streams followed here (:mod:`.outputs`), in order to ``log``."""

    def __init__(
        self,
        log: Ring,
        keys: Keys,
        scripts: Scripts,
        link: Link,
        connect: Connect,
        observe: Callable[[TaskEvent], None],
        where: str,
        expecting: Callable[[], bool] | None = None,
    ) -> None:
        self.log = log
        self.keys = keys
        self.scripts = scripts
        self.link = link
        self.connect = connect  # a command connection (not the reader's own)
        self.observe = observe
        self.where = where
        #: True while an event this process wrote is still to be read: the streams'
        #: wake-up waits for it (a task's state changes, each a write, go out together).
        self.expecting = expecting
        self._malformed: set[str] = set()  # ids of records warned about (``task_or_none``)
        self.epoch: str | None = None
        self.read_from = "0-0"  # stream id the reader continues after
        self.log_read = "0-0"  # the last entry of the log itself it read (see ``sync.lua``)
        self.generation = 0  # bumped whenever the log restarts
        self.ready = anyio.Event()  # connected once
        self.tried = anyio.Event()  # the first attempt to connect is over
        self.follows = OutputFollows(keys.output)
        self.merge = Merge()
        self.client_id: int | None = None  # the reader's connection, while it reads
        self.reading = False  # in XREAD BLOCK: a new registration cuts it short

    def reset(self) -> None:
        """Before a (re)start: adopt Redis's history from its head on the first sync."""
        self.epoch = None
        self.ready = anyio.Event()
        self.tried = anyio.Event()

    # -- ids -----------------------------------------------------------------------

    def parse_event_id(self, event_id: str) -> StreamKey | None:
        epoch, _, stream_id = event_id.partition("-")
        if epoch != self.epoch:
            return None
        return stream_key(stream_id)

    async def sync(self, client: Redis | None = None, *, reader: bool = False) -> tuple[str, str]:
        """Read the history's epoch and head; adopt a new history if Redis has one.

        The reader also checks that nothing after its position was trimmed while it
        was away; if something was, the log restarts and every stream resyncs.
        """
        # A reply judges the positions its call was sent with: one whose log restarted
        # meanwhile (a concurrent sync adopted a history) is asked again, once.
        for _ in range(2):
            generation = self.generation
            args = {"new_epoch": secrets.token_hex(4), "after": self.read_from, "seen": self.log_read}
            if client is None:
                async with self.connect() as db:
                    reply = await call(self.scripts.sync(db, self.keys.history, args))
            else:
                reply = await call(self.scripts.sync(client, self.keys.history, args))
            if generation == self.generation:
                break
        epoch, head, intact = (text(part) for part in reply)
        if generation != self.generation:
            pass  # restarted again meanwhile: judge nothing (the reader syncs again if need be)
        elif epoch != self.epoch:
            if self.epoch is not None:
                logger.warning("Redis holds a different history (flushed or replaced): streams resync")
            self._adopt(epoch, head, "the broker's history was flushed or replaced")
        elif reader and intact == "2":
            logger.warning("Redis's history went back (writes lost in a failover or restart): streams resync")
            self._adopt(epoch, head, "the broker's history went back: writes were lost")
        elif reader and intact != "1":
            logger.warning("events were trimmed while this process could not read them: streams resync")
            self._adopt(epoch, head, "events were trimmed while this server could not read them")
        return epoch, head

    def _adopt(self, epoch: str, head: str, reason: str) -> None:
        self.epoch = epoch
        self.read_from, self.log_read = head, "0-0"
        self.generation += 1
        self.follows.rebase(key(head))
        self.merge.clear()
        self.log.restart(key(head), reason)

    # -- output followed here -----------------------------------------------------------

    async def follow(self, task: Task | None) -> OutputFollow:
        """Read ``task``'s output stream (None: every running task's) until the answer's
        ``close()``. Raises :class:`Unavailable` if the reader does not answer in a few
        seconds (Redis unreachable)."""
        follows = self.follows
        if task is not None and not follows.pending:
            known = follows.join(task.id)  # read already: no need to wait for the reader
            if known is not None:
                return known
        request = Request(task)
        # The first registration waiting cuts the reader's read short (again while it
        # was not blocked yet); the others wait for the same turn of the reader.
        leader = not follows.pending
        follows.pending.append(request)
        try:
            with anyio.move_on_after(_CATCH_UP):
                delay = 0.005  # the reader may be about to block: try again soon, then less often
                while not request.done.is_set():
                    if leader:
                        await self._unblock()
                    with anyio.move_on_after(delay):
                        await request.done.wait()
                    delay = min(delay * 2, 0.1)
        finally:
            if request.answer is None:
                request.abandoned = True  # answered later, it is closed at once
                with contextlib.suppress(ValueError):
                    self.follows.pending.remove(request)
        if request.answer is None:
            raise unavailable(ConnectionError("the stream reader is not connected"))
        return request.answer

    async def _unblock(self) -> None:
        """Cut the reader's blocked XREAD short (it then reads the streams followed now)."""
        client_id = self.client_id
        if client_id is None or not self.reading:
            return
        with contextlib.suppress(Unavailable, *UNREACHABLE):
            async with self.connect() as db:
                await call(db.client_unblock(client_id))

    async def _answer_pending(self) -> None:
        follows = self.follows
        pending, follows.pending = follows.pending, []
        running: list[Task] = []
        if not follows.following_all and any(request.task is None for request in pending):
            try:
                running = await self._running()
            except BaseException:
                follows.pending[:0] = pending  # answered after the reconnection
                raise
        since = key(self.read_from)
        # Followed before the answers are made: an ``?output=1`` stream's answer names the
        # running tasks, whose output since its resume id it reads back from their streams
        # (this reader may already be past that id, reading another task's output).
        for task in running:
            follows.add(task.id, since, task).by_all = True
        for request in pending:
            follows.answer(request, since)

    async def _running(self) -> list[Task]:
        """The tasks that may write output now: those leased to a worker (read on a command
        connection: a pipeline takes one of its own, and the reader's client has just one)."""
        async with self.connect() as db:
            ids = await db.zrange(self.keys.leases, 0, -1)
            if not ids:
                return []
            async with db.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.keys.task(text(task_id)), ["d", "i", "t"])
                rows = await pipe.execute(raise_on_error=False)
        tasks = (
            task_or_none(row, text(task_id), self._malformed) for task_id, row in zip(ids, rows, strict=True)
        )
        return [task for task in tasks if task is not None and not task.terminal]

    # -- following -------------------------------------------------------------------

    async def run(self, client: Redis) -> None:
        """Follow the stream into the log; reconnect with backoff, resume from the last id."""
        # Entries as Redis sends them (flat field lists): read in bulk, they are made
        # into dicts here without redis-py's per-entry parsing.
        client.set_response_callback("XREAD", _as_sent)
        delay = MIN_BACKOFF
        try:
            while True:
                try:
                    async with deadline(TURN_TIMEOUT):
                        await self.sync(client, reader=True)
                        self.client_id = await client.client_id()
                    if delay > MIN_BACKOFF:
                        logger.info("reconnected to Redis at %s", self.where)
                    self.link.up()
                    self.ready.set()
                    self.tried.set()
                    delay = MIN_BACKOFF
                    await self._follow(client)
                except (Unavailable, asyncio.TimeoutError, *UNREACHABLE) as exc:
                    if self.link.connected_since is not None or delay == MIN_BACKOFF:
                        logger.warning("lost Redis at %s (%s); reconnecting", self.where, exc)
                except Exception:
                    logger.exception("the Redis stream reader failed; restarting it")
                self.tried.set()
                self.link.down()
                self.client_id = None
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _follow(self, client: Redis) -> None:
        keys, log, follows = self.keys, self.log, self.follows
        log_key = keys.events.encode()
        # The reads go straight over the client's one connection: redis-py's per-command
        # work (retries, which the reader turns off, and observability) cost more CPU than
        # a light load's reads themselves.
        await client.initialize()
        connection = client.connection
        read_some = False
        while True:
            generation = self.generation
            if follows.pending:
                await self._answer_pending()
            follows.expire()
            streams = [log_key, *follows.streams()]
            merge = self.merge
            merge.keep(streams)
            if not merge.buffered:
                # Nothing waits: every stream's next entry comes after the last one taken.
                merge.positions.clear()
            # Events just appended: hold the streams' wake-up back while reading on, so
            # that events written close together (a task's queued, running and failed,
            # each a write of its own) go out to each stream in one write.
            log.hold(HOLD_WINDOW, HOLD_QUIET, self.expecting, EXPECT_WINDOW)
            try:
                async with deadline(TURN_TIMEOUT):
                    if read_some and not merge.buffered and not follows.pending:
                        await anyio.sleep(READ_PAUSE)
                    read_some = False
                    # Entries waiting to be taken: read what came since, without waiting.
                    block = ("BLOCK", BLOCK_MS) if not merge.buffered else ()
                    self.reading = bool(block)
                    try:
                        reply = await _command(
                            connection, "XREAD", "COUNT", merge.count, *block, "STREAMS",
                            *streams, *(merge.positions.get(name, self.read_from) for name in streams),
                        )  # fmt: skip
                    finally:
                        self.reading = False
                    if generation != self.generation:
                        continue  # the log restarted meanwhile: read on from its new base
                    if not reply and merge.buffered:
                        # Every stream answered that it has nothing more: all that waits is next.
                        await self._append(client, merge.take([], log_key, follows.by_key))
                        continue
                    if not reply:
                        epoch = await client.get(keys.epoch)
                        if epoch is None or text(epoch) != self.epoch:
                            await self.sync(client, reader=True)
                        continue
                    # RESP2 answers [[stream, entries], …], RESP3 {stream: entries}.
                    read_some = True
                    replies = list(reply.items()) if isinstance(reply, dict) else reply
                    if len(streams) == 1 and not merge.buffered:
                        await self._append(client, [(None, entry, None) for entry in replies[0][1]])
                    else:
                        await self._append(client, merge.take(replies, log_key, follows.by_key))
            finally:
                log.release()

    async def _append(self, client: Redis, entries: list[Entry]) -> None:
        """Append ``entries`` (stream entries in id order, each with its id's key, if
        parsed, and the task id of its output stream, None for the log's) and read on
        after the last one.

        A task that starts while ``?output=1`` streams follow every task is followed
        from its start: its output up to the last of ``entries`` is read at once and
        merged in."""
        log, follows = self.log, self.follows
        epoch = (self.epoch or "").encode()
        index = 0
        while index < len(entries):
            entry_key, (raw_id, flat), output_of = entries[index]
            index += 1
            self.read_from = text(raw_id)
            if output_of is not None:
                followed = follows.tasks.get(output_of)
                if followed is not None:
                    event: TaskEvent | None = self.output_event(raw_id, entry_key, flat, followed)
                    if event is not None:
                        log.append(event)
                        self.observe(event)
                continue
            it = iter(flat)
            fields = dict(zip(it, it, strict=False))
            if fields.get(b"e") != epoch:
                await self.sync(client, reader=True)
                return
            self.log_read = self.read_from
            state = self.event(raw_id, fields, entry_key)
            if state is None:
                continue
            state_key = state.key  # (a partition's log keys the event anew)
            log.append(state)
            self.observe(state)
            task_id = state.entry_task_id
            followed = follows.tasks.get(task_id) if task_id is not None else None
            if followed is not None:
                followed.snapshot = state
                if state.terminal:
                    followed.by_all = False
                    follows.drop(task_id)  # type: ignore[arg-type]
                elif follows.following_all:
                    followed.by_all = True  # followed by a per-task stream first
            elif follows.following_all and task_id is not None and not state.terminal:
                followed = follows.add(task_id, state_key, state)
                followed.by_all = True
                last = entries[-1]
                bound = last[0] if last[0] is not None else sent_key(last[1][0])
                self.merge.positions[followed.key] = stream_id(bound)
                if bound > state_key:
                    found: Any = await client.xrange(followed.key, "(" + text(raw_id), stream_id(bound))
                    if found:
                        extra: list[Entry] = [(sent_key(f[0]), (f[0], _flat(f[1])), task_id) for f in found]
                        rest = [(k if k is not None else sent_key(e[0]), e, o) for k, e, o in entries[index:]]
                        entries[index:] = sorted([*rest, *extra], key=_entry_key)

    def output_event(
        self, stream_id: bytes, entry_key: StreamKey | None, flat: list[Any], followed: Followed
    ) -> TaskEvent | None:
        """The ``task.output`` event an output stream's entry (fields ``c``, the chunk) holds."""
        sid = text(stream_id)
        try:
            if len(flat) == 2 and flat[0] == b"c":
                chunk = flat[1]
            else:
                chunk = dict(zip(flat[::2], flat[1::2], strict=False))[b"c"]
            return OutputEvent(f"{self.epoch}-{sid}", entry_key or key(sid), chunk, followed)
        except (KeyError, ValueError):
            logger.error("skipping malformed output entry %s", sid)
            return None

    def event(
        self, stream_id: bytes | str, fields: dict[bytes, bytes], entry_key: StreamKey | None = None
    ) -> StateEvent | None:
        """The state change a log entry holds (None, logged, if a field is missing).

        Its snapshot is decoded when something first reads it: a process where no
        stream covers a task pays for reading its entries, not for decoding them."""
        sid = text(stream_id)
        event_id = f"{self.epoch}-{sid}"
        try:
            if entry_key is None:
                ms, _, seq = sid.partition("-")  # as Redis wrote it: two decimal numbers
                entry_key = (int(ms), int(seq))
            stream_key = entry_key
            event_type = text(fields[b"t"])
            if event_type == OUTPUT_EVENT:
                raise ValueError("output is not in the log")
            raw_id = fields.get(b"k")
            task_id = None if raw_id is None else text(raw_id)
            return StateEvent(event_id, stream_key, event_type, fields[b"d"], task_id)
        except (KeyError, ValueError, UnicodeDecodeError):
            logger.error("skipping malformed stream entry %s", sid)
            return None

    # -- history older than the log ------------------------------------------------------

    async def events_after(self, after: StreamKey, history: int) -> list[TaskEvent] | None:
        log = self.log
        newest, floor, generation = log.newest, log.floor, self.generation
        if newest is None:
            return None
        if after > newest:
            # Newer than this process has read (written through another one): wait for it.
            return [] if await self._catch_up(after, generation) else None
        if floor is None or after >= floor:
            return None
        args = {"up_to": stream_id(floor), "after": stream_id(after), "count": history + 1}
        async with self.connect() as db:
            reply = await call(self.scripts.history(db, self.keys.history, args))
        epoch, intact, entries = reply
        if text(epoch) != self.epoch or intact != 1 or generation != self.generation:
            return None  # another history, or some of what followed ``after`` was trimmed
        events: list[TaskEvent] = []
        for sid, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if text(fields.get(b"e", b"")) != self.epoch:
                return None
            event = self.event(sid, fields)
            if event is not None:
                events.append(event)
        if not events or events[-1].key != floor:
            # The log's oldest event is output (not in the stored log): the history
            # joins the log there if it reaches up to it.
            first = log.read(log.first, 1)
            if generation != self.generation or not first or local_key(first[0].key) != floor:
                return None
            if first[0].type != OUTPUT_EVENT:
                return None
            events.append(first[0])
        return events

    async def _catch_up(self, after: StreamKey, generation: int) -> bool:
        """Wait (bounded) until the log holds every event up to ``after`` of the streams
        this process reads; False if ``after`` was never given in this history.

        ``after`` may be an output event's, in a stream not read here: the log holds
        enough once no stream read here has an entry the log lacks up to ``after``."""
        _, head = await self.sync()
        if after > key(head):
            return False  # never written in this history
        log = self.log
        with anyio.move_on_after(_CATCH_UP):
            while generation == self.generation and not log.closed:
                newest = log.newest
                if newest is not None and newest >= after:
                    return True
                if not await self._unread(key(self.read_from), after):
                    log.reach(after)
                    return generation == self.generation
                with anyio.move_on_after(0.05):
                    await log.wait(log.head)
        return False

    async def _unread(self, read: StreamKey, after: StreamKey) -> bool:
        """Whether a stream read here has an entry after ``read`` up to ``after``."""
        start = "(" + stream_id(read)
        names = [self.keys.events, *(k.decode() for k in self.follows.streams())]
        async with self.connect() as db, db.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xrange(name, start, stream_id(after), count=1)
            found = await call(pipe.execute())
        return any(found)

    async def check_epoch(self, tasks: list[Task]) -> None:
        """A snapshot from a history this process has not adopted yet makes it adopt it now."""
        prefix = f"{self.epoch}-"
        if any(task.event_id and not task.event_id.startswith(prefix) for task in tasks):
            await self.sync()


async def _command(connection: Any, *args: Any) -> Any:
    """``args`` sent on ``connection`` and its raw reply read; on any failure the
    connection is closed (the next command opens it again)."""
    try:
        await connection.send_command(*args, check_health=False)
        return await connection.read_response()
    except ResponseError as exc:
        await drop(connection)
        raise (wrong_kind(exc) or not_serving(exc)) from None
    except BaseException:
        await drop(connection)
        raise


def _decoded(event_id: str, decode: Callable[[], T]) -> T:
    try:
        return decode()
    except (KeyError, ValueError, TypeError) as exc:
        logger.error("malformed stream entry %s: %s", event_id, exc)
        raise MalformedEvent(f"malformed stream entry {event_id}") from None


class StateEvent(TaskEvent):
    """A state change read from the log; its snapshot decoded when first read."""

    __slots__ = ("_raw_task", "_task", "entry_task_id")

    def __init__(self, id: str, key: StreamKey, type: str, raw_task: bytes, task_id: str | None) -> None:
        self.id = id
        self.key = key
        self.type = type
        self.chunk = None
        self._frames = {}
        self.position = None
        self._raw_task = raw_task
        self._task: Task | None = None
        #: The entry's ``k``: its task's id, known without decoding the snapshot.
        self.entry_task_id = task_id

    @property
    def task_id(self) -> str:
        return self.entry_task_id if self.entry_task_id is not None else self.task.id

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = _decoded(self.id, self._decode)
        return self._task

    @task.setter
    def task(self, value: Task) -> None:
        self._task = value

    def _decode(self) -> Task:
        record = codec.loads(self._raw_task)
        return Task.from_record({**record, "event_id": self.id, "event_type": self.type})


class OutputEvent(TaskEvent):
    """A ``task.output`` event read from a task's output stream, decoded when first used.

    Its ``task`` is the task's latest snapshot this process had read when the chunk came
    (the state event before it, or what its follower registered with)."""

    __slots__ = ("_chunk", "_raw_chunk", "_record", "_snapshot", "_task", "_task_id")

    def __init__(self, id: str, key: StreamKey, raw_chunk: bytes, followed: Followed) -> None:
        self.id = id
        self.key = key
        self.type = OUTPUT_EVENT
        self._frames = {}
        self.position = None
        self._raw_chunk = raw_chunk
        self._task_id = followed.task_id  # of the stream it was read from
        self._snapshot = followed.snapshot
        self._task: Task | None = None
        self._chunk: OutputChunk | None = None
        self._record: Any = None  # the chunk's JSON, decoded

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = snapshot_task(self._snapshot)
        return self._task

    @task.setter
    def task(self, value: Task) -> None:
        self._task = value

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def chunk(self) -> OutputChunk:
        if self._chunk is None:
            self._chunk = _decoded(self.id, self._decode_chunk)
        return self._chunk

    @chunk.setter
    def chunk(self, value: OutputChunk) -> None:
        self._chunk = value

    def _decode_chunk(self) -> OutputChunk:
        record = self._json()
        return OutputChunk(
            record["id"], record["seq"], record["kind"], record["text"], record.get("level"), self.id
        )

    def _json(self) -> Any:
        if self._record is None:
            self._record = codec.loads_record(self._raw_chunk)
        return self._record

    def frame(self, root_path: str = "") -> bytes:
        """The SSE frame (the same under every mount). A writer's chunk of this stream's
        task is its data as stored, once decoded (strict JSON: raises
        :class:`MalformedEvent` if it is not), not encoded again: it holds no line break,
        so it cannot end the frame. Anything else is encoded again."""
        frame = self._frames.get("")
        if frame is None:
            record, raw = _decoded(self.id, self._json), self._raw_chunk
            if (
                type(record) is dict
                and record.keys() in _CHUNK_FIELDS
                and record["id"] == self._task_id
                and b"\n" not in raw
                and b"\r" not in raw
            ):
                frame = json_frame(self.id, OUTPUT_EVENT, raw)
            else:
                frame = encode_frame(self.id, OUTPUT_EVENT, self.chunk.to_dict())
            self._frames[""] = frame
        return frame


class Merge:
    """The entries of one ``XREAD`` over several streams, taken in id order.

    Each stream is read on from where it was last answered (``positions``). What a
    stream answered past the first id beyond which another may hold more than it
    returned (it filled ``COUNT``) waits in ``buffered`` for the next read. Every
    stream answers as of the same moment and ids grow with time across streams, so
    nothing still unread comes before the last id taken."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count or BATCH  # the reads' COUNT
        self.positions: dict[bytes, str] = {}
        self.buffered: dict[bytes, list[Entry]] = {}

    def clear(self) -> None:
        self.positions.clear()
        self.buffered.clear()

    def keep(self, streams: list[bytes]) -> None:
        """Forget the streams no longer read."""
        for gone in [name for name in self.positions if name not in streams]:
            del self.positions[gone]
            self.buffered.pop(gone, None)

    def take(self, replies: list[Any], log_key: bytes, by_key: dict[bytes, str]) -> list[Entry]:
        safe: StreamKey | None = None  # None: every stream answered all it had
        buffered = self.buffered
        for name, entries in replies:
            if not entries:
                continue
            owner = None if name == log_key else by_key.get(name)
            if owner is None and name != log_key:
                continue  # no longer followed (its last stream left during the read)
            keyed = [(sent_key(entry[0]), entry, owner) for entry in entries]
            buffered.setdefault(name, []).extend(keyed)
            self.positions[name] = text(entries[-1][0])
            if len(entries) >= self.count and (safe is None or keyed[-1][0] < safe):
                safe = keyed[-1][0]
        taken: list[Entry] = []
        for name, waiting in list(buffered.items()):
            end = len(waiting) if safe is None else bisect_right(waiting, safe, key=_entry_key)
            taken.extend(waiting[:end])
            if end == len(waiting):
                del buffered[name]
            else:
                buffered[name] = waiting[end:]
        taken.sort(key=_entry_key)
        return taken


def _entry_key(entry: Entry) -> StreamKey:
    return entry[0]  # type: ignore[return-value]


def _flat(fields: Any) -> list[Any]:
    """A stream entry's fields as Redis sends them (redis-py's XRANGE makes them a dict)."""
    return [item for pair in fields.items() for item in pair] if isinstance(fields, dict) else fields


def _as_sent(response: Any, **options: Any) -> Any:
    return response


def stream_key(sid: str) -> StreamKey | None:
    """The key of a stream id ``<ms>-<seq>``; None unless both parts fit Redis's 64 bits."""
    ms, _, seq = sid.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    if len(ms) > 20 or len(seq) > 20:
        return None
    key = int(ms), int(seq)
    return key if key[0] < _U64 and key[1] < _U64 else None


_U64 = 2**64


def sent_key(sid: bytes) -> StreamKey:
    """The key of a stream id as Redis sent it (two decimal numbers; unchecked)."""
    ms, _, seq = sid.partition(b"-")
    return int(ms), int(seq)


def key(sid: str | bytes) -> StreamKey:
    parsed = stream_key(text(sid))
    if parsed is None:
        raise ValueError(f"not a stream id: {sid!r}")
    return parsed


def stream_id(stream_key: StreamKey) -> str:
    return f"{stream_key[0]}-{stream_key[1]}"
