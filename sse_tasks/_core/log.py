"""The process-local event log: a bounded, totally ordered ring that every stream reads.

Subscribers keep only a cursor (an absolute position) into the ring, so an idle or
stalled subscriber costs no memory per event: a publisher appends once and wakes all
waiters with one event. A subscriber that falls further behind than the ring holds
is told so (``position < first``) and resyncs from snapshots.

A log may join a longer history part way (a broker whose history lives elsewhere):
:meth:`restart` forgets what it holds and records the key it continues after.

Waking is deferred while events keep coming (see :meth:`EventLog.append`), so that a
stream takes a burst in one write instead of one write per event. A reader that
fetches events from elsewhere (the Redis stream, where each arrives on its own) can
hold a pending wake-up back while it fetches more (:meth:`EventLog.hold`): until a
quiet spell, within a bound it sets.

asyncio only, like the stream path that reads it (see :mod:`sse_tasks.web.sse` for the
deliberate deviations and the benchmark behind them): a waiting stream holds one
asyncio future, and deferred wake-ups are ``loop.call_soon``/``call_later`` callbacks.
Appending works anywhere (with nobody waiting there is nothing to wake); waiting and
waking happen on the running asyncio loop.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .models import Task, TaskEvent

#: Longest a wake-up is held back while a publisher keeps appending, in seconds.
COALESCE_WINDOW = 0.002
#: Root paths whose last joined chunk is kept at once (see :meth:`EventLog.joined`).
_JOINED_ROOTS = 8
#: Why a stream behind the log is behind, unless the log restarted since (see
#: :attr:`EventLog.behind`).
FELL_BEHIND = "fell behind the retained history"


class EventLog:
    """A bounded ring of :class:`TaskEvent`, ordered by ``event.key``."""

    def __init__(self, maxlen: int = 10_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._events: list[TaskEvent] = []
        self._keys: list[Any] = []
        self._first = 0  # absolute position of self._events[0]
        # The log holds every event after key ``_base`` (None: its whole history),
        # from position ``_base_position`` on, until the ring trims.
        self._base: Any = None
        self._base_position = 0
        self._reached: Any = None  # see reach()
        self._restarted: str | None = None  # why the log last restarted
        # Waiters: one future each. A stream waits most of its life, so this is a cost
        # per idle stream: a future, no coroutine.
        self._futures: dict[asyncio.Future[None], None] = {}
        self._wake_deadline: float | None = None  # a deferred wake-up is scheduled
        self._appended = False
        self._held = False  # a reader is fetching more events (see hold())
        self._quiet = 0.0
        self._expecting: Callable[[], bool] | None = None
        self._expect_window = 0.0
        self._wake_started = self._last_append = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._joined: dict[str, tuple[int, int, bytes]] = {}  # see joined()
        self.closed = False

    @property
    def first(self) -> int:
        """Absolute position of the oldest event still held."""
        return self._first

    @property
    def head(self) -> int:
        """Absolute position the next event will get."""
        return self._first + len(self._events)

    @property
    def last(self) -> TaskEvent | None:
        return self._events[-1] if self._events else None

    @property
    def floor(self) -> Any:
        """The oldest key :meth:`position_after` accepts (None: any key, nothing was lost)."""
        if self._first > self._base_position:
            return self._keys[0]
        return self._base

    @property
    def newest(self) -> Any:
        """The key of the newest event held or, with none held since :meth:`restart`, its
        base; or a later key the log was told it holds everything up to (:meth:`reach`)."""
        newest = self._keys[-1] if self._keys else self._base
        reached = self._reached
        if reached is not None and (newest is None or reached > newest):
            return reached
        return newest

    def reach(self, key: Any) -> None:
        """Every event up to ``key`` that this log will hold is held (a broker checked it
        has no more of them): a stream resumed at ``key`` may follow from :attr:`head`."""
        if self._reached is None or key > self._reached:
            self._reached = key

    def restart(self, base: Any, reason: str = FELL_BEHIND) -> None:
        """Forget every event: the history now continues after key ``base``.

        Every reader finds itself behind (``position < first``) and resyncs; ``reason``
        says why (:attr:`behind`).
        """
        position = self.head + 1
        self._events.clear()
        self._keys.clear()
        self._first = self._base_position = position
        self._base = base
        self._reached = None
        self._restarted = reason
        self.wake()

    @property
    def behind(self) -> str:
        """Why a reader before :attr:`first` is behind: the reason of the last
        :meth:`restart` until the ring trims after it, then :data:`FELL_BEHIND`."""
        if self._restarted is not None and self._first == self._base_position:
            return self._restarted
        return FELL_BEHIND

    def append(self, event: TaskEvent) -> None:
        """Add ``event`` (its key must exceed every key held) and wake the waiters."""
        self._events.append(event)
        self._keys.append(event.key)
        overflow = len(self._events) - self.maxlen
        if overflow > 0:
            # Trim in chunks so trimming stays amortised O(1) per append.
            drop = max(overflow, self.maxlen // 8)
            del self._events[:drop]
            del self._keys[:drop]
            self._first += drop
        self._appended = True
        if self._held:
            self._last_append = time.monotonic()
        if self._futures and self._wake_deadline is None:
            # Waiters exist only on a running loop, and this runs on it.
            loop = asyncio.get_running_loop()
            # Wake the streams once the loop has gone round without a new event (or
            # after COALESCE_WINDOW at most). A publisher that appends on every turn of
            # the loop (a task reporting progress as fast as it can) would otherwise
            # have every stream write each event alone: a write per event per stream
            # is most of the cost of a fan-out. Sparse events wait one turn, no more.
            self._wake_started = self._last_append = time.monotonic()
            self._wake_deadline = self._wake_started + COALESCE_WINDOW
            # The first check runs early in the next turn, before the publisher could
            # append again: it only looks again, so each later check covers a whole turn.
            self._appended = True
            loop.call_soon(self._deferred_wake, loop)

    def _deferred_wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        deadline = self._wake_deadline
        if deadline is None:
            return  # woken meanwhile
        if not self.closed:
            now = time.monotonic()
            if self._held:
                # A reader is fetching more events: wait for a quiet spell (or the deadline).
                wake_at = min(deadline, self._last_append + self._quiet)
                expecting, longest = self._expecting, self._wake_started + self._expect_window
                if now < longest and expecting is not None and expecting():
                    # One is on its way (a write of this process): look again shortly.
                    wake_at = min(longest, now + self._quiet / 4)
                if now < wake_at:
                    self._appended = False
                    self._timer = loop.call_later(wake_at - now, self._deferred_wake, loop)
                    return
                self.wake()
                return
            if self._appended and now < deadline:
                self._appended = False
                loop.call_soon(self._deferred_wake, loop)
                return
        self.wake()

    @property
    def waiting(self) -> int:
        """Waiters parked on the log now (one per idle stream on asyncio): a stream that
        goes away must leave none behind."""
        return len(self._futures)

    @property
    def wake_pending(self) -> bool:
        """Events were appended that the waiters have not been woken for yet."""
        return self._wake_deadline is not None

    def hold(
        self,
        window: float,
        quiet: float,
        expecting: Callable[[], bool] | None = None,
        expect_window: float = 0.0,
    ) -> None:
        """Keep a pending wake-up back while the caller fetches more events from elsewhere.

        Until :meth:`release`, the waiters are woken once no event was appended for
        ``quiet`` seconds, or ``window`` seconds after the first one waiting, whichever
        comes first; but while ``expecting()`` is true (an event is known to be on its
        way), not before it is appended or ``expect_window`` seconds after the first one
        waiting. Does nothing when no wake-up is pending.
        """
        deadline = self._wake_deadline
        if deadline is None:
            return
        self._held = True
        self._quiet = quiet
        self._expecting = expecting
        self._expect_window = expect_window
        self._wake_deadline = max(deadline, self._wake_started + window)

    def release(self) -> None:
        """End a :meth:`hold`: a pending wake-up is back to waking after a turn without events."""
        if not self._held:
            return
        self._held = False
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            loop = asyncio.get_running_loop()
            loop.call_soon(self._deferred_wake, loop)

    def wake(self) -> None:
        """Wake every waiter (new events, or the log is closing)."""
        self._wake_deadline = None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        futures = self._futures
        if futures:
            self._futures = {}
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.wake()

    def read(self, position: int, limit: int | None = None) -> list[TaskEvent]:
        """Up to ``limit`` events from ``position`` on; ``position`` must be ``>= first``."""
        start = position - self._first
        return self._events[start : None if limit is None else start + limit]

    def joined(self, position: int, events: list[TaskEvent], root_path: str) -> bytes:
        """The frames of ``events`` (``read(position, …)`` as it returned them) in one chunk.

        Streams woken together at the same position send the same bytes: the last
        chunk is kept per root path (streams of one hub may be served under a mount and
        behind a proxy's prefix at once), so a fan-out joins it once per root path
        instead of once per stream.
        """
        cached = self._joined.get(root_path)
        if cached is not None and cached[:2] == (position, len(events)):
            return cached[2]
        chunk = b"".join([event.stream_frame(root_path) for event in events])
        if root_path not in self._joined and len(self._joined) >= _JOINED_ROOTS:
            self._joined.clear()
        self._joined[root_path] = (position, len(events), chunk)
        return chunk

    def reopen(self) -> None:
        self.closed = False

    def position_after(self, key: Any) -> int | None:
        """Position of the first event whose key exceeds ``key``.

        None when the ring no longer reaches back that far (events after ``key`` may
        have been trimmed), so the caller must resync.
        """
        newest = self.newest
        if newest is not None and key > newest:
            return None  # an id from the future: not from this log (or not read yet)
        if self._base is not None and key < self._base:
            return None  # older than anything this log has held
        index = bisect_right(self._keys, key)
        if index == 0 and self._first > self._base_position:
            # Everything held is newer than ``key``; whatever followed ``key`` may be lost
            # unless ``key`` is exactly the last event trimmed, which we cannot know.
            return None
        return self._first + index

    async def wait(self, position: int) -> None:
        """Return once an event exists at ``position`` or the log is closing/woken."""
        if position < self.head or self.closed:
            return
        waiting = self.waiter()
        try:
            await waiting
        finally:
            self.forget(waiting)

    def waiter(self) -> asyncio.Future[None]:
        """What :meth:`wait` awaits: done at the next wake-up. Hand it to :meth:`forget`
        once it is done or abandoned (a stream awaits it without a coroutine of its own)."""
        future = asyncio.get_running_loop().create_future()
        self._futures[future] = None
        return future

    def forget(self, waiter: asyncio.Future[None]) -> None:
        self._futures.pop(waiter, None)

    def __len__(self) -> int:
        return len(self._events)


class OutputFollow:
    """A stream's registration to receive a task's output (or every task's) in the log,
    from :meth:`~sse_tasks.brokers.Broker.follow_output`, until :meth:`close`.

    ``since``: the key after which the log holds all of that output (None: all of it;
    older output is in the task's stored output). ``tasks``: for every task's output,
    the unfinished tasks whose output the log holds from ``since`` on."""

    def __init__(
        self, since: Any, close: Callable[[], None] | None = None, tasks: Sequence[Task] = ()
    ) -> None:
        self.since = since
        self.tasks = tasks
        self._close = close

    def close(self) -> None:
        """End the registration (idempotent)."""
        close, self._close = self._close, None
        if close is not None:
            close()


class PartKey(NamedTuple):
    """The key of an event in a partitioned log: its partition and its key there.

    Keys compare only within one partition: a task's events stay in its partition, so a
    per-task stream compares its own task's keys alone; a stream of many tasks keeps a
    :class:`Vector`."""

    partition: int
    key: Any


class Vector:
    """A position in a partitioned log: for each partition, the key of the last event
    taken there (None: none of that partition's history yet).

    Processes read the partitions each in order but interleave them as events arrive,
    so a stream of many tasks resumes from a vector, never from one event's key."""

    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = tuple(parts)

    def has(self, key: PartKey) -> bool:
        """Whether the event of ``key`` is at or before this position."""
        part = self.parts[key.partition]
        return part is not None and key.key <= part

    def behind(self, other: Vector) -> bool:
        """Whether this position lacks an event ``other`` has, in some partition."""
        return any(
            theirs is not None and (mine is None or mine < theirs)
            for mine, theirs in zip(self.parts, other.parts, strict=True)
        )

    def advanced(self, key: PartKey) -> Vector:
        """This position moved past the event of ``key`` (never back)."""
        parts = list(self.parts)
        if not self.has(key):
            parts[key.partition] = key.key
        return Vector(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vector) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __repr__(self) -> str:
        return f"Vector{self.parts!r}"


def reached(position: Any, key: Any) -> bool:
    """Whether a stream at ``position`` (an event's key or a :class:`Vector`) has taken the
    event of ``key`` already."""
    if isinstance(position, Vector):
        return position.has(key)
    if isinstance(position, PartKey) and position.partition != key.partition:
        return False
    return bool(key <= position)


def before(position: Any, since: Any) -> bool:
    """Whether a stream at ``position`` lacks some event at or before ``since`` (an
    event's key or a :class:`Vector`): what it resumes from starts before ``since``."""
    if isinstance(since, Vector):
        if isinstance(position, Vector):
            return position.behind(since)
        return True
    return not reached(position, since) and not (
        isinstance(position, PartKey) and position.partition != since.partition
    )


def latest(keys: Sequence[Any], log: EventLog) -> Any:
    """The latest of ``keys`` (events' keys) in ``log``: in a partitioned log, a
    :class:`Vector` of the latest of each partition (None where there is none)."""
    if not isinstance(log, PartitionedLog):
        return max(keys)
    parts: list[Any] = [None] * log.partitions
    for key in keys:
        part = parts[key.partition]
        if part is None or key.key > part:
            parts[key.partition] = key.key
    return Vector(parts)


def local_key(key: Any) -> Any:
    """``key`` within its partition (itself, in a log of one partition)."""
    return key.key if isinstance(key, PartKey) else key


def order(key: Any) -> Any:
    """A sort key that puts keys of different partitions roughly in time order (each
    partition's ids come from its own clock); within a partition, the exact order."""
    return (key.key, key.partition) if isinstance(key, PartKey) else key


class PartitionedLog(EventLog):
    """An :class:`EventLog` fed by several partitions, each totally ordered, interleaved
    as their events arrive; keys are :class:`PartKey`.

    Each event appended gets the log's position after it (``event.position``), a
    :class:`Vector` named by ``name`` (the broker's encoding): streams send those ids, so
    any id a stream sent resumes any stream. A stream of many tasks resumes from the
    whole position (:meth:`resume`), a stream of one task from its task's partition in
    it (:meth:`position_after`); a task's own event id (a snapshot's) is a key in its
    partition, which only a stream of that task resumes from.
    """

    def __init__(self, maxlen: int, partitions: int, name: Callable[[Vector], str]) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        super().__init__(maxlen)
        self.partitions = partitions
        self.name = name
        self._part_keys: list[list[Any]] = [[] for _ in range(partitions)]
        self._part_positions: list[list[int]] = [[] for _ in range(partitions)]
        # Per partition: everything after this key is held (None: all of its history).
        self._part_floor: list[Any] = [None] * partitions
        self._part_trimmed = [False] * partitions  # some of the partition's events trimmed
        self._vector: list[Any] = [None] * partitions  # the position after the newest event
        self._holders: dict[int, Callable[[], bool] | None] = {}  # see hold_for()

    @property
    def vector(self) -> Vector:
        """The position after the newest event held (and every key :meth:`reach` was told)."""
        return Vector(self._vector)

    def newest_in(self, partition: int) -> Any:
        """The newest key of ``partition`` held or reached (None: none since the start)."""
        return self._vector[partition]

    def hold_for(
        self,
        partition: int,
        window: float,
        quiet: float,
        expecting: Callable[[], bool] | None = None,
        expect_window: float = 0.0,
    ) -> None:
        """:meth:`hold` by ``partition``'s reader: the wake-up waits while any partition's
        reader fetches (one reader's release does not end another's hold)."""
        self._holders[partition] = expecting
        if len(self._holders) > 1:
            expecting = self._any_expecting
        self.hold(window, quiet, expecting, expect_window)

    def release_for(self, partition: int) -> None:
        """:meth:`release` by ``partition``'s reader: the hold ends with the last one's."""
        self._holders.pop(partition, None)
        if not self._holders:
            self.release()

    def _any_expecting(self) -> bool:
        return any(expecting is not None and expecting() for expecting in self._holders.values())

    def first_in(self, partition: int) -> int:
        """Position of the oldest event of ``partition`` held (:attr:`head` if none)."""
        positions = self._part_positions[partition]
        return positions[0] if positions else self.head

    def floor_in(self, partition: int) -> Any:
        """The key of ``partition`` after which the log holds all of its events (None: all)."""
        return self._part_floor[partition]

    def oldest_in(self, partition: int) -> Any:
        """As :attr:`EventLog.floor` for one partition: the key of its oldest event held
        once some of its events were trimmed, else the key it holds everything after."""
        keys = self._part_keys[partition]
        if keys and self._part_trimmed[partition]:
            return keys[0]
        return self._part_floor[partition]

    @property
    def newest(self) -> Any:
        return self.vector

    @property
    def floor(self) -> Any:
        return Vector(self._part_floor)

    def reach(self, key: Any) -> None:
        partition, local = key
        current = self._vector[partition]
        if current is None or local > current:
            self._vector[partition] = local

    def restart(self, base: Any, reason: str = FELL_BEHIND) -> None:
        """Forget every event; ``base`` is the :class:`Vector` the history continues after."""
        super().restart(base, reason)
        for keys, positions in zip(self._part_keys, self._part_positions, strict=True):
            keys.clear()
            positions.clear()
        self._part_floor = list(base.parts)
        self._part_trimmed = [False] * self.partitions
        self._vector = list(base.parts)

    def append(self, event: TaskEvent) -> None:
        partition, local = event.key
        head = self.head
        self._part_keys[partition].append(local)
        self._part_positions[partition].append(head)
        newest = self._vector[partition]
        if newest is None or local > newest:  # (never back behind what reach() was told)
            self._vector[partition] = local
        event.position = self.name(Vector(self._vector))
        first = self._first
        super().append(event)
        if self._first != first:
            self._trim(self._first)

    def _trim(self, first: int) -> None:
        for partition, positions in enumerate(self._part_positions):
            drop = bisect_right(positions, first - 1)
            if drop:
                keys = self._part_keys[partition]
                self._part_floor[partition] = keys[drop - 1]
                self._part_trimmed[partition] = True
                del keys[:drop]
                del positions[:drop]

    def position_after(self, key: Any) -> int | None:
        """Position of the first event of ``key``'s partition after it; None when the log
        does not hold all of that partition's events after it."""
        partition, local = key
        if not 0 <= partition < self.partitions:
            return None
        newest, floor = self._vector[partition], self._part_floor[partition]
        if newest is not None and local > newest:
            return None  # not read here yet (or not from this log)
        if floor is not None and local < floor:
            return None
        keys = self._part_keys[partition]
        index = bisect_right(keys, local)
        return self._part_positions[partition][index] if index < len(keys) else self.head

    def resume(self, vector: Vector) -> tuple[int, int] | None:
        """Where a stream at ``vector`` continues: ``(start, until)``, the first event it
        lacks and the position from which it lacks every event (before it, the events it
        has are to be skipped); None when the log does not hold all it lacks."""
        if len(vector.parts) != self.partitions:
            return None
        start, until = self.head, self._first
        for partition, local in enumerate(vector.parts):
            keys, positions = self._part_keys[partition], self._part_positions[partition]
            if local is None:
                if self._part_floor[partition] is not None:
                    return None
                index = 0
            else:
                if self.position_after(PartKey(partition, local)) is None:
                    return None
                index = bisect_right(keys, local)
            if index < len(keys):
                start = min(start, positions[index])
            if index:
                until = max(until, positions[index - 1] + 1)
        return start, max(start, until)
