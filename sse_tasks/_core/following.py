"""What a follower of one task's SSE stream makes of its events (pure data, no I/O).

The client's ``follow`` feeds every event it reads to a :class:`Following` and yields
what comes back: each snapshot once, each output chunk once and in ``seq`` order, the
terminal snapshot last (the server sends a finished task's stored output before it).
It keeps the ``Last-Event-ID`` to reconnect with, which the server makes exact (inside
a replay of stored output too). After a ``reset`` the server sends the current
snapshot and replays the task's output from its first chunk: chunks already yielded
are recognised by ``seq`` and skipped, so nothing held by the caller has to be dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from . import codec
from .models import OUTPUT_EVENT, OutputChunk, Task, TaskState
from .text import ascii_int

__all__ = ["Following", "FollowingTasks", "MalformedAnswer", "split_task_url", "task_from_data"]


class MalformedAnswer(ValueError):
    """The server answered something that is not what the HTTP contract says."""


def split_task_url(url: str) -> tuple[str, str]:
    """``(base_url, task_id)`` of a task URL (``…/tasks/<id>``) or its events URL.

    Raises ``ValueError`` if ``url`` names no task.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/events"):
        path = path[: -len("/events")]
    base, sep, quoted = path.rpartition("/tasks/")
    if not sep or not quoted or "/" in quoted or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a task URL (http://host/…/tasks/<id>): {url!r}")
    try:
        task_id = unquote(quoted, errors="strict")  # the client quotes it again
    except UnicodeDecodeError:
        raise ValueError(f"not a task URL: its task id is not UTF-8 once unquoted: {url!r}") from None
    return urlunsplit((parts.scheme, parts.netloc, base, "", "")), task_id


def task_from_data(data: Any, event_id: str | None = None, event_type: str | None = None) -> Task:
    """A snapshot from its public JSON (and the event that carried it, if any)."""
    if not isinstance(data, dict) or not isinstance(data.get("tags", []), list):
        raise MalformedAnswer("the server answered something that is not a task snapshot")
    try:
        record = {**data, "state": TaskState(data["state"])}
        if event_type is not None:
            record["event_id"] = event_id or None
            record["event_type"] = event_type
        task = Task.from_record(record)
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedAnswer(f"the server answered a malformed task snapshot: {exc}") from None
    wrong = _ill_typed(task)
    if wrong is not None:
        raise MalformedAnswer(f"the server answered a malformed task snapshot: its {wrong} is not valid")
    return task


def _ill_typed(task: Task) -> str | None:
    """The first field of ``task`` whose value is not of the type the API gives it."""
    progress = task.progress
    checks = (
        ("id", isinstance(task.id, str)),
        ("name", isinstance(task.name, str)),
        ("progress", progress is None or (type(progress) in (int, float) and 0 <= progress <= 1)),
        ("message", task.message is None or isinstance(task.message, str)),
        ("error", task.error is None or _is_error(task.error)),
        ("created_at", _is_time(task.created_at)),
        ("started_at", task.started_at is None or _is_time(task.started_at)),
        ("finished_at", task.finished_at is None or _is_time(task.finished_at)),
        ("owner", task.owner is None or isinstance(task.owner, str)),
        ("output_chunks", type(task.output_chunks) is int and task.output_chunks >= 0),
        ("metadata", isinstance(task.metadata, dict)),
        ("tags", all(isinstance(tag, str) for tag in task.tags)),
    )
    return next((name for name, valid in checks if not valid), None)


def _is_error(error: Any) -> bool:
    return isinstance(error, dict) and all(isinstance(error.get(key), str) for key in ("type", "message"))


def _is_time(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def chunk_from_data(data: Any, event_id: str | None) -> OutputChunk:
    """An output chunk from a ``task.output`` event; ``event_id`` is the event's SSE id."""
    try:
        chunk = OutputChunk.from_record({**data, "event_id": event_id or None})
    except (KeyError, TypeError) as exc:
        raise MalformedAnswer(f"the server sent a malformed output chunk: {exc!r}") from None
    valid = (
        isinstance(chunk.task_id, str)
        and type(chunk.seq) is int
        and chunk.seq >= 0
        and chunk.kind in ("log", "output")
        and isinstance(chunk.text, str)
        and (chunk.level is None or isinstance(chunk.level, str))
    )
    if not valid:
        raise MalformedAnswer(f"the server sent a malformed output chunk: {data!r:.200}")
    return chunk


class Following:
    """The state of one ``follow``: what was yielded, and where to resume.

    ``last_event_id`` is what the caller passed (a snapshot's ``event_id`` or a
    chunk's): with the id of a replayed chunk (``<event>~<seq>``) the chunks up to that
    ``seq`` count as held. With ``output`` false, chunks are read and skipped.
    """

    def __init__(self, last_event_id: str | None, *, output: bool, task_id: str | None = None) -> None:
        self.output = output
        self.task_id = task_id  # the task followed: an event of another is malformed
        self.last_event_id = last_event_id
        _, tilde, seq = (last_event_id or "").partition("~")
        held = ascii_int(seq) if tilde else None
        self.next_seq = held + 1 if held is not None else 0
        # The snapshot the caller holds (of a finished task, a replayed chunk comes before it).
        self.snapshot_id = None if tilde else last_event_id
        self.finished = False  # the terminal snapshot has come: stop

    def feed(self, event_type: str, event_id: str, data: str) -> Task | OutputChunk | None:
        """What to yield for one event: None for a ``reset``, a repeat, or output not asked for."""
        if event_type == OUTPUT_EVENT:
            chunk = chunk_from_data(_json(data), event_id)
            self._check_task(chunk.task_id)
            self.last_event_id = event_id or self.last_event_id
            if chunk.seq < self.next_seq:
                return None  # replayed after a reset: yielded already
            self.next_seq = chunk.seq + 1
            return chunk if self.output else None
        if not event_type.startswith("task."):
            return None  # "reset": the snapshot and the replayed output follow it
        task = task_from_data(_json(data), event_id, event_type)
        self._check_task(task.id)
        self.last_event_id = task.event_id or self.last_event_id
        if task.event_id is not None and task.event_id == self.snapshot_id:
            return None  # the snapshot after a reset, when it is the one already yielded
        self.snapshot_id = task.event_id
        self.finished = task.terminal  # the server's last event on a per-task stream
        return task

    def _check_task(self, task_id: str) -> None:
        if self.task_id is not None and task_id != self.task_id:
            raise MalformedAnswer(
                f"the stream of task {self.task_id!r} sent an event of task {task_id!r:.200}"
            )


def _json(data: str) -> Any:
    try:
        return codec.loads(data)  # strict: no NaN, no lone surrogate, bounded depth
    except (ValueError, RecursionError):
        raise MalformedAnswer(f"the server sent an event that is not JSON: {data[:200]!r}") from None


_RANK = {TaskState.QUEUED: 0, TaskState.RUNNING: 1}


class FollowingTasks:
    """The state of one ``follow_tasks``: where to resume, and the first paint's snapshots.

    The list is read after its cursor is taken, so the first events after the cursor
    may be older than a listed snapshot: those are skipped (a task never goes back to an
    earlier state, a terminal task never changes, listed progress never goes back), and
    so is the event of the listed change itself. After that, ``Last-Event-ID`` makes the
    stream exact, so nothing else is filtered. A ``reset`` forgets the paint: the current
    snapshots that follow it are all yielded.

    With output, the client asks :meth:`missing` of each item and first fetches those
    chunks from the task's own stream; :meth:`take` skips a chunk yielded already: each
    task's chunks come once, in order, from its first.
    """

    def __init__(self, last_event_id: str | None, *, output: bool) -> None:
        self.output = output
        self.last_event_id = last_event_id
        self.painted: dict[str, Task] = {}
        # With output: each task's next chunk to yield, and whether the snapshots coming
        # are a resync's (all numbered with one id), whose output counts are to be caught up.
        self.next_seq: dict[str, int] = {}
        self.resync: str | bool = False

    def paint(self, tasks: list[Task], cursor: str) -> list[Task]:
        """The listed snapshots to yield (numbered with the cursor they are exact from)."""
        self.last_event_id = cursor
        painted = [task.evolve(event_id=cursor) for task in tasks]
        self.painted = {task.id: task for task in painted}
        return painted

    def missing(self, item: Task | OutputChunk, *, painted: bool = False) -> tuple[str, int, int] | None:
        """``(task id, first seq, end)``: the chunks to fetch from the task's own stream
        before yielding ``item``: those written before the paint, or during a ``reset``'s gap.

        A listed or resync snapshot counts its task's chunks so far (``output_chunks``); a
        live chunk past the next one expected shows the ones before it were written before.
        """
        if not self.output:
            return None
        if isinstance(item, OutputChunk):
            task_id, end = item.task_id, item.seq
        elif painted or self.resync:
            task_id, end = item.id, item.output_chunks
        else:
            return None
        start = self.next_seq.get(task_id, 0)
        return (task_id, start, end) if start < end else None

    def take(self, item: Task | OutputChunk) -> bool:
        """Whether to yield ``item`` (not a chunk yielded already); counts the chunks yielded."""
        if isinstance(item, OutputChunk):
            if item.seq < self.next_seq.get(item.task_id, 0):
                return False
            self.next_seq[item.task_id] = item.seq + 1
        return True

    def feed(self, event_type: str, event_id: str, data: str) -> Task | OutputChunk | None:
        """What to yield for one event: None for a ``reset``, a stale event, or output not asked for."""
        if event_type == OUTPUT_EVENT:
            chunk = chunk_from_data(_json(data), event_id)
            self.last_event_id = event_id or self.last_event_id
            self.resync = False
            return chunk if self.output else None
        if not event_type.startswith("task."):
            if event_type == "reset":
                self.painted.clear()
                self.resync = True
            return None
        task = task_from_data(_json(data), event_id, event_type)
        self.last_event_id = task.event_id or self.last_event_id
        if self.resync is True:
            self.resync = task.event_id or False
        elif self.resync and self.resync != task.event_id:
            self.resync = False  # past the resync's snapshots: live again
        listed = self.painted.pop(task.id, None)
        if listed is not None:
            if _older(task, listed):
                self.painted[task.id] = listed
                return None
            # Caught up with the list: the stream is exact from here.
            if task.evolve(event_id=None, event_type=None) == listed.evolve(event_id=None):
                return None  # the very change the list showed
        return task


def _older(task: Task, listed: Task) -> bool:
    """Whether an event after the cursor shows less than the listed snapshot already did."""
    if listed.terminal:
        return True
    rank, listed_rank = _RANK.get(task.state, 2), _RANK[listed.state]
    if rank != listed_rank:
        return rank < listed_rank
    return (task.progress if task.progress is not None else -1.0) < (
        listed.progress if listed.progress is not None else -1.0
    )
