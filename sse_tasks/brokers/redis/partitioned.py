"""``?partitions=N``: the log split over N partitions, so that no single key carries the
cluster and adding Redis shards adds capacity.

Each partition is a whole broker of its own (:class:`~sse_tasks.brokers.redis.RedisBroker`
under the prefix ``<prefix>.<N>.<n>``: its log, its tasks, its leases, its reader), and
a task lives in one of them, chosen by its id (CRC-32 of the id, modulo N), with
all of its keys: its events stay totally ordered there. On a Redis Cluster each
partition's keys carry a hash tag of their own, picked so that the partitions' slots
spread evenly over the slot space (with ``redis-cli --cluster create``'s even ranges,
over the masters): every script still runs on one slot.

Every partition's reader appends to one :class:`~sse_tasks._core.log.PartitionedLog`,
interleaved as the events arrive, so streams fan out from one ring as with one
partition. A stream of many tasks sends the log's position after each event, a
:class:`~sse_tasks._core.log.Vector` of one stream id per partition; its
``Last-Event-ID`` resumes it on any process, which interleaves the partitions its own
way. Ids: ``<digest>_<ms>-<seq>_<ms>-<seq>…`` (``digest``: of the partitions' epochs,
so an id from another history, or another partition count, does not parse); a task's
own event ids stay its partition's, ``<epoch>-<ms>-<seq>``.

Processes of one deployment must agree on N: a task's partition depends on it.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import anyio
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..._core.log import FELL_BEHIND, OutputFollow, PartitionedLog, PartKey, Vector
from ..._core.models import Task, TaskEvent, TaskState
from ..base import EventObserver
from .reader import StreamKey, stream_key


def partition_of(task_id: str, partitions: int) -> int:
    """The partition of ``task_id`` among ``partitions`` (the same in every process)."""
    return zlib.crc32(task_id.encode("utf-8", "surrogatepass")) % partitions


def partition_prefixes(prefix: str, partitions: int, cluster: bool) -> list[str]:
    """Each partition's key prefix: ``<prefix>.<N>.<n>``; on a cluster with a suffix that puts
    partition ``n``'s hash tag in the middle of the ``n``-th of N even slot ranges."""
    if partitions == 1:
        return [prefix]
    prefixes = []
    for partition in range(partitions):
        name = f"{prefix}.{partitions}.{partition}"  # another count: other keys
        # (A prefix with a brace makes the tag itself: every partition keeps that slot.)
        if cluster and "{" not in prefix and "}" not in prefix:
            low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
            high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
            width = max(1, (high - low) // 4)
            middle = (low + high) // 2
            suffix = 0
            while abs(key_slot(f"{name}.{suffix}".encode()) - middle) > width // 2:
                suffix += 1
            name = f"{name}.{suffix}"
        prefixes.append(name)
    return prefixes


class PartitionView:
    """One partition's reader's window on the shared :class:`PartitionedLog`: the keys it
    is given and answers are its own stream's (:data:`StreamKey`); the events it
    appends get their :class:`PartKey`."""

    def __init__(self, log: PartitionedLog, partition: int) -> None:
        self._log = log
        self.partition = partition

    @property
    def newest(self) -> Any:
        return self._log.newest_in(self.partition)

    @property
    def floor(self) -> Any:
        """As :attr:`EventLog.floor`: the oldest key held once some were trimmed (the
        reader reads history up to it, and joins the log at it)."""
        return self._log.oldest_in(self.partition)

    @property
    def first(self) -> int:
        """Position of this partition's oldest event held (the head if none)."""
        return self._log.first_in(self.partition)

    @property
    def head(self) -> int:
        return self._log.head

    @property
    def closed(self) -> bool:
        return self._log.closed

    def append(self, event: TaskEvent) -> None:
        event.key = PartKey(self.partition, event.key)
        self._log.append(event)

    def restart(self, base: StreamKey, reason: str = FELL_BEHIND) -> None:
        """The partition's history starts again after ``base``: the whole log restarts
        (every stream resyncs), the other partitions' positions kept."""
        parts = list(self._log.vector.parts)
        parts[self.partition] = base
        self._log.restart(Vector(parts), reason)

    def reach(self, key: StreamKey) -> None:
        self._log.reach(PartKey(self.partition, key))

    def read(self, position: int, limit: int | None = None) -> list[TaskEvent]:
        return self._log.read(position, limit)

    def hold(
        self,
        window: float,
        quiet: float,
        expecting: Callable[[], bool] | None = None,
        expect_window: float = 0.0,
    ) -> None:
        self._log.hold_for(self.partition, window, quiet, expecting, expect_window)

    def release(self) -> None:
        self._log.release_for(self.partition)

    async def wait(self, position: int) -> None:
        await self._log.wait(position)

    def reopen(self) -> None:
        self._log.reopen()


def placed(partition: int, event: TaskEvent) -> TaskEvent:
    """``event`` of ``partition`` keyed in the partitioned log."""
    if not isinstance(event.key, PartKey):
        event.key = PartKey(partition, event.key)
    return event


def placed_follow(partition: int, follow: OutputFollow) -> OutputFollow:
    since = None if follow.since is None else PartKey(partition, follow.since)
    return OutputFollow(since, follow.close, follow.tasks)


class Part(Protocol):
    """What a partition is to this module (a :class:`~sse_tasks.brokers.redis.RedisBroker`)."""

    @property
    def history_epoch(self) -> str | None: ...
    async def head(self) -> tuple[str, StreamKey]: ...
    async def events_after(self, key: Any) -> list[TaskEvent] | None: ...
    async def follow_output(self, task: Task | None) -> OutputFollow: ...
    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]: ...
    async def launch(self, observer: EventObserver) -> None: ...
    async def first_connect(self) -> None: ...
    async def read_back(self) -> None: ...
    async def close(self) -> None: ...


P = TypeVar("P", bound=Part)


class Partitions(Generic[P]):
    """The partitions of one broker (a :class:`Part` each), the shared log, and the ids of
    positions in it."""

    def __init__(self, parts: Sequence[P], history: int) -> None:
        self.parts = list(parts)
        self.log = PartitionedLog(history, len(self.parts), self.name)
        self._digests: dict[tuple[str, ...], str] = {}

    def of(self, task_id: str) -> P:
        """The partition ``task_id`` lives in."""
        return self.parts[self.index(task_id)]

    def index(self, task_id: str) -> int:
        return partition_of(task_id, len(self.parts))

    # -- ids -------------------------------------------------------------------------

    def _epochs(self) -> tuple[str, ...]:
        return tuple(part.history_epoch or "" for part in self.parts)

    def _digest(self, epochs: tuple[str, ...]) -> str:
        digest = self._digests.get(epochs)
        if digest is None:
            if len(self._digests) > 64:
                self._digests.clear()
            digest = hashlib.blake2s("|".join(epochs).encode(), digest_size=5).hexdigest()
            self._digests[epochs] = digest
        return digest

    def name(self, vector: Vector, epochs: tuple[str, ...] | None = None) -> str:
        """The id of a position in the log (in the partitions' histories ``epochs``: by
        default those their readers follow)."""
        parts = ("x" if part is None else f"{part[0]}-{part[1]}" for part in vector.parts)
        return "_".join((self._digest(epochs or self._epochs()), *parts))

    def parse(self, event_id: str) -> Any | None:
        """A position (:class:`Vector`) or one partition's event key (:class:`PartKey`)."""
        digest, underscore, rest = event_id.partition("_")
        if underscore:
            texts = rest.split("_")
            if digest != self._digest(self._epochs()) or len(texts) != len(self.parts):
                return None
            parts = [None if text == "x" else stream_key(text) for text in texts]
            if any(part is None and text != "x" for part, text in zip(parts, texts, strict=True)):
                return None
            return Vector(parts)
        epoch, _, stream_id = event_id.partition("-")
        for partition, part in enumerate(self.parts):
            if part.history_epoch == epoch and epoch:
                key = stream_key(stream_id)
                return None if key is None else PartKey(partition, key)
        return None

    async def cursor(self) -> str:
        heads = [await part.head() for part in self.parts]
        epochs = tuple(epoch for epoch, _ in heads)
        return self.name(Vector([key for _, key in heads]), epochs)

    # -- reading across partitions -----------------------------------------------------

    async def events_after(self, position: Any) -> list[TaskEvent] | None:
        """History the log does not hold: of one partition (a :class:`PartKey`), or of
        each partition where the log does not reach back to ``position``."""
        if isinstance(position, PartKey):
            found = await self.parts[position.partition].events_after(position.key)
            return None if found is None else [placed(position.partition, e) for e in found]
        if not isinstance(position, Vector) or len(position.parts) != len(self.parts):
            return None
        events: list[TaskEvent] = []
        for partition, local in enumerate(position.parts):
            if local is None:
                return None
            if self.log.position_after(PartKey(partition, local)) is not None:
                continue
            found = await self.parts[partition].events_after(local)
            if found is None:
                return None
            events.extend(placed(partition, event) for event in found)
        return events

    async def follow_all(self) -> OutputFollow:
        """Every partition's running tasks' output, for one ``?output=1`` stream."""
        follows: list[OutputFollow] = []

        def close() -> None:
            for follow in follows:
                follow.close()

        try:
            for part in self.parts:
                follows.append(await part.follow_output(None))
        except BaseException:
            close()
            raise
        since = Vector([follow.since for follow in follows])
        return OutputFollow(since, close, [task for follow in follows for task in follow.tasks])

    async def list_tasks(self, **filters: Any) -> list[Task]:
        """Each partition's newest tasks, merged newest first (by creation time: each
        partition orders its own exactly)."""
        limit = filters["limit"]
        found: list[Task] = []
        for part in self.parts:
            found.extend(await part.list_tasks(**filters))
        found.sort(key=lambda task: task.created_at, reverse=True)
        return found[:limit]


async def start_all(parts: Sequence[Part], observer: EventObserver) -> None:
    """Start every partition, then wait for their readers together (a few seconds at most).
    If one cannot start, those started are closed again (in the reverse order)."""
    started: list[Part] = []
    try:
        for part in parts:
            await part.launch(observer)
            started.append(part)
    except BaseException:
        with anyio.CancelScope(shield=True):
            for part in reversed(started):
                await part.close()
        raise
    async with anyio.create_task_group() as group:
        for part in parts:
            group.start_soon(part.first_connect)


async def read_back_all(parts: Sequence[Part]) -> None:
    """Every partition's :meth:`read_back`, together (each waits 5 s at most)."""
    async with anyio.create_task_group() as group:
        for part in parts:
            group.start_soon(part.read_back)
