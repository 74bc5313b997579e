"""The stream reader: follows the Redis stream into the process's local event log.

It also decides which history this process is in (the epoch): an id from another
history does not parse, and a flushed or replaced Redis makes the log restart, so
every stream resyncs instead of continuing the wrong history.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from redis.asyncio import Redis

from ..._core import codec
from ..._core.errors import Unavailable
from ..._core.log import EventLog
from ..._core.models import OUTPUT_EVENT, MalformedEvent, OutputChunk, Task, TaskEvent
from .keys import Keys
from .link import UNREACHABLE, Link, call
from .scripts import Scripts

logger = logging.getLogger("sse_tasks.redis")

StreamKey = tuple[int, int]
T = TypeVar("T")
Connect = Callable[[], contextlib.AbstractAsyncContextManager[Redis]]

BATCH = 1000  # stream entries per XREAD
BLOCK_MS = 1000  # an idle reader checks the epoch this often
MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: While the reader reads on, the streams are woken once no entry came for HOLD_QUIET
#: seconds, or HOLD_WINDOW after the first one waiting (each publish is a round trip of
#: its own, so a task's events arrive apart; see ``benchmarks/README.md``).
HOLD_WINDOW = 0.005
HOLD_QUIET = 0.002
_CATCH_UP = 5.0  # seconds a resuming stream waits for this process to read up to its id


class StreamReader:
    """One ``XREAD BLOCK`` connection per process, appending every event in order to ``log``."""

    def __init__(
        self,
        log: EventLog,
        keys: Keys,
        scripts: Scripts,
        link: Link,
        connect: Connect,
        observe: Callable[[TaskEvent], None],
        where: str,
    ) -> None:
        self.log = log
        self.keys = keys
        self.scripts = scripts
        self.link = link
        self.connect = connect  # a command connection (not the reader's own)
        self.observe = observe
        self.where = where
        self.epoch: str | None = None
        self.read_from = "0-0"  # stream id the reader continues after
        self.generation = 0  # bumped whenever the log restarts
        self.ready = anyio.Event()  # connected once
        self.tried = anyio.Event()  # the first attempt to connect is over
        self.snapshots = Snapshots()

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
        args = {"new_epoch": secrets.token_hex(4), "after": self.read_from}
        if client is None:
            async with self.connect() as db:
                reply = await call(self.scripts.sync(db, self.keys.history, args))
        else:
            reply = await call(self.scripts.sync(client, self.keys.history, args))
        epoch, head, intact = (text(part) for part in reply)
        if epoch != self.epoch:
            if self.epoch is not None:
                logger.warning("Redis holds a different history (flushed or replaced): streams resync")
            self._adopt(epoch, head)
        elif reader and intact != "1":
            logger.warning("events were trimmed while this process could not read them: streams resync")
            self._adopt(epoch, head)
        return epoch, head

    def _adopt(self, epoch: str, head: str) -> None:
        self.epoch = epoch
        self.read_from = head
        self.generation += 1
        self.log.restart(key(head))

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
                    await self.sync(client, reader=True)
                    if delay > MIN_BACKOFF:
                        logger.info("reconnected to Redis at %s", self.where)
                    self.link.up()
                    self.ready.set()
                    self.tried.set()
                    delay = MIN_BACKOFF
                    await self._follow(client)
                except (Unavailable, *UNREACHABLE) as exc:
                    if self.link.connected_since is not None or delay == MIN_BACKOFF:
                        logger.warning("lost Redis at %s (%s); reconnecting", self.where, exc)
                except Exception:
                    logger.exception("the Redis stream reader failed; restarting it")
                self.tried.set()
                self.link.down()
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _follow(self, client: Redis) -> None:
        keys, log = self.keys, self.log
        while True:
            generation = self.generation
            # Events just appended: hold the streams' wake-up back while reading on, so
            # that events written close together (a task's queued, running and failed,
            # each a write of its own) go out to each stream in one write.
            log.hold(HOLD_WINDOW, HOLD_QUIET)
            try:
                reply = await client.execute_command(  # type: ignore[no-untyped-call]
                    "XREAD", "COUNT", BATCH, "BLOCK", BLOCK_MS, "STREAMS", keys.events, self.read_from
                )
                if generation != self.generation:
                    continue  # the log restarted meanwhile: read on from its new base
                if not reply:
                    epoch = await client.get(keys.epoch)
                    if epoch is None or text(epoch) != self.epoch:
                        await self.sync(client, reader=True)
                    continue
                epoch = (self.epoch or "").encode()
                # RESP2 answers [[stream, entries]], RESP3 {stream: entries}.
                entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
                for stream_id, flat in entries:
                    it = iter(flat)
                    fields = dict(zip(it, it, strict=False))
                    if fields.get(b"e") != epoch:
                        self.read_from = text(stream_id)
                        await self.sync(client, reader=True)
                        break
                    event = self.event(stream_id, fields)
                    if event is not None:
                        log.append(event)
                        self.observe(event)
                else:
                    self.read_from = text(entries[-1][0])
            finally:
                log.release()

    def event(self, stream_id: bytes | str, fields: dict[bytes, bytes]) -> TaskEvent | None:
        """The event a stream entry holds (None, logged, if a field is missing).

        Its snapshot (and chunk) are decoded when something first reads them: a process
        where no stream covers a task pays for reading its entries, not for decoding
        them (a stream of the process, or the end of a task, reads them)."""
        sid = text(stream_id)
        event_id = f"{self.epoch}-{sid}"
        try:
            ms, _, seq = sid.partition("-")  # as Redis wrote it: two decimal numbers
            stream_key = (int(ms), int(seq))
            if fields[b"t"] == _OUTPUT:
                return OutputEvent(event_id, stream_key, fields[b"d"], fields[b"c"], self.snapshots)
            return StateEvent(event_id, stream_key, text(fields[b"t"]), fields[b"d"])
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
        events = []
        for sid, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if text(fields.get(b"e", b"")) != self.epoch:
                return None
            event = self.event(sid, fields)
            if event is not None:
                events.append(event)
        if not events or events[-1].key != floor:
            return None
        return events

    async def _catch_up(self, after: StreamKey, generation: int) -> bool:
        """Wait (bounded) until the reader has appended the event ``after``; False if it never will."""
        _, head = await self.sync()
        if after > key(head):
            return False  # never written in this history
        with anyio.move_on_after(_CATCH_UP):
            while generation == self.generation and not self.log.closed:
                newest = self.log.newest
                if newest is not None and newest >= after:
                    return True
                await self.log.wait(self.log.head)
        return False

    async def check_epoch(self, tasks: list[Task]) -> None:
        """A snapshot from a history this process has not adopted yet makes it adopt it now."""
        prefix = f"{self.epoch}-"
        if any(task.event_id and not task.event_id.startswith(prefix) for task in tasks):
            await self.sync()


class Snapshots:
    """The snapshots output entries carry, decoded once: a task's chunks between two of
    its state changes all carry the same one. Bounded (cleared when full)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._tasks: dict[bytes, Task] = {}

    def task(self, raw: bytes) -> Task:
        task = self._tasks.get(raw)
        if task is None:
            if len(self._tasks) >= self.size:
                self._tasks.clear()
            record = codec.loads(raw)
            task = Task.from_record({**record, "event_id": None, "event_type": OUTPUT_EVENT})
            self._tasks[raw] = task
        return task


def _decoded(event_id: str, decode: Callable[[], T]) -> T:
    try:
        return decode()
    except (KeyError, ValueError, TypeError) as exc:
        logger.error("malformed stream entry %s: %s", event_id, exc)
        raise MalformedEvent(f"malformed stream entry {event_id}") from None


class StateEvent(TaskEvent):
    """A state change read from the stream; its snapshot decoded when first read."""

    __slots__ = ("_raw_task", "_task")

    def __init__(self, id: str, key: StreamKey, type: str, raw_task: bytes) -> None:
        self.id = id
        self.key = key
        self.type = type
        self.chunk = None
        self._frames = {}
        self._raw_task = raw_task
        self._task: Task | None = None

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
    """A ``task.output`` event read from the stream, decoded when first used.

    Its ``task`` is the snapshot as of the chunk (without an event id of its own,
    shared by the task's chunks that carry the same snapshot)."""

    __slots__ = ("_chunk", "_raw_chunk", "_raw_task", "_snapshots", "_task")

    def __init__(
        self, id: str, key: StreamKey, raw_task: bytes, raw_chunk: bytes, snapshots: Snapshots
    ) -> None:
        self.id = id
        self.key = key
        self.type = OUTPUT_EVENT
        self._frames = {}
        self._raw_task, self._raw_chunk, self._snapshots = raw_task, raw_chunk, snapshots
        self._task: Task | None = None
        self._chunk: OutputChunk | None = None

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = _decoded(self.id, lambda: self._snapshots.task(self._raw_task))
        return self._task

    @task.setter
    def task(self, value: Task) -> None:
        self._task = value

    @property
    def chunk(self) -> OutputChunk:
        if self._chunk is None:
            self._chunk = _decoded(self.id, self._decode_chunk)
        return self._chunk

    @chunk.setter
    def chunk(self, value: OutputChunk) -> None:
        self._chunk = value

    def _decode_chunk(self) -> OutputChunk:
        return OutputChunk.from_record({**codec.loads(self._raw_chunk), "event_id": self.id})


_OUTPUT = OUTPUT_EVENT.encode()


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


def key(sid: str | bytes) -> StreamKey:
    parsed = stream_key(text(sid))
    if parsed is None:
        raise ValueError(f"not a stream id: {sid!r}")
    return parsed


def stream_id(stream_key: StreamKey) -> str:
    return f"{stream_key[0]}-{stream_key[1]}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
