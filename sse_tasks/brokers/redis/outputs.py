"""Which tasks' output streams this process reads: those a client here follows.

A task's output lives in a stream of its own (``P:out:<id>``), not in the shared log,
so a process pays for a chunk only where a client receives it. A per-task SSE stream
follows its task; ``/events?output=1`` follows every task that is running. The
reader (:class:`~.reader.StreamReader`) reads the followed streams and the log in one
``XREAD``: their ids come from one id space (``next_ids.lua``), so it appends every
event to the local log in order.

A registration is applied by the reader between two reads (it answers with the key
from which the log holds the task's output, see :class:`OutputFollow`); the reader's
blocked read is cut short (``CLIENT UNBLOCK``) so that a new follower waits a round
trip, not a read's whole block.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from ..._core.log import OutputFollow
from ..._core.models import MalformedEvent, Task, TaskEvent

StreamKey = tuple[int, int]

#: Seconds every task's output is still read after the last ``?output=1`` stream here ends.
LINGER = 60.0


class Followed:
    """One task whose output stream the reader reads."""

    __slots__ = ("by_all", "count", "key", "since", "snapshot", "task_id")

    def __init__(self, task_id: str, key: bytes, since: StreamKey, snapshot: Task | TaskEvent) -> None:
        self.task_id = task_id
        self.key = key  # its output stream's name
        self.since = since  # the log holds its output after this key
        self.count = 0  # per-task followers here
        self.by_all = False  # followed because an ``?output=1`` stream follows every task
        #: The task's latest snapshot this process knows (a state event decodes it only
        #: when an output event's task is first read).
        self.snapshot = snapshot

    @property
    def task(self) -> Task:
        return snapshot_task(self.snapshot)


def snapshot_task(snapshot: Task | TaskEvent) -> Task:
    """The task a known snapshot is of (a state event's decoded when first asked)."""
    return snapshot.task if isinstance(snapshot, TaskEvent) else snapshot


class Request:
    """A registration waiting for the reader: a task (None: every task), and its answer."""

    def __init__(self, task: Task | None) -> None:
        self.task = task
        self.done = anyio.Event()
        self.answer: OutputFollow | None = None
        self.abandoned = False  # its stream stopped waiting (gone, or timed out)


class OutputFollows:
    """The followed tasks of one process and the registrations waiting for the reader."""

    def __init__(self, prefix_of: Callable[[str], str]) -> None:
        self.output_key = prefix_of
        self.tasks: dict[str, Followed] = {}
        self.by_key: dict[bytes, str] = {}  # output stream name -> task id
        self.all = 0  # ``?output=1`` streams here
        self.all_since: StreamKey | None = None  # following every task's output since
        self.linger_until = 0.0
        self.pending: list[Request] = []

    def rebase(self, since: StreamKey) -> None:
        """The history restarted (its streams resync): what is followed is read on from
        the new history's head."""
        for followed in self.tasks.values():
            followed.since = since
        if self.all_since is not None:
            self.all_since = since

    def add(self, task_id: str, since: StreamKey, snapshot: Task | TaskEvent) -> Followed:
        followed = self.tasks.get(task_id)
        if followed is None:
            key = self.output_key(task_id).encode()
            followed = self.tasks[task_id] = Followed(task_id, key, since, snapshot)
            self.by_key[key] = task_id
        return followed

    def drop(self, task_id: str) -> None:
        followed = self.tasks.get(task_id)
        if followed is not None and followed.count <= 0 and not followed.by_all:
            del self.tasks[task_id]
            del self.by_key[followed.key]

    def release(self, task_id: str) -> None:
        followed = self.tasks.get(task_id)
        if followed is not None:
            followed.count -= 1
            self.drop(task_id)

    @property
    def following_all(self) -> bool:
        """Every running task's output is read (a stream asks, or asked a moment ago)."""
        return self.all_since is not None

    def release_all(self) -> None:
        self.all -= 1
        if self.all <= 0:
            # Kept a while: a client reconnecting (a cut stream, a proxy's timeout)
            # resumes exactly instead of resyncing.
            self.all, self.linger_until = 0, time.monotonic() + LINGER

    def expire(self) -> None:
        """Stop following every task once no stream has asked for :data:`LINGER` s."""
        if self.all_since is None or self.all > 0 or time.monotonic() < self.linger_until:
            return
        self.all_since = None
        for task_id, followed in list(self.tasks.items()):
            followed.by_all = False
            self.drop(task_id)

    def join(self, task_id: str) -> OutputFollow | None:
        """Register one more follower of a task read already (None if it is not)."""
        followed = self.tasks.get(task_id)
        if followed is None:
            return None
        followed.count += 1
        return OutputFollow(followed.since, lambda: self.release(task_id))

    def answer(self, request: Request, since: StreamKey) -> None:
        """Register ``request`` now, from ``since``: the key the reader reads on from.
        A request its stream gave up on meanwhile is closed at once."""
        task = request.task
        if task is None:
            if self.all_since is None:
                self.all_since = since
            self.all += 1
            answer = OutputFollow(self.all_since, self.release_all, self._running())
        else:
            self.add(task.id, since, task)
            joined = self.join(task.id)
            assert joined is not None
            answer = joined
        if request.abandoned:
            answer.close()
        else:
            request.answer = answer
        request.done.set()

    def _running(self) -> list[Task]:
        """The tasks followed as running; one whose latest log entry is not a snapshot
        (another program wrote it: it was logged as it was read) is followed no more."""
        running = []
        for task_id, followed in list(self.tasks.items()):
            if not followed.by_all:
                continue
            try:
                running.append(followed.task)
            except MalformedEvent:
                followed.by_all = False
                self.drop(task_id)
        return running

    def streams(self) -> list[bytes]:
        return [followed.key for followed in self.tasks.values()]
