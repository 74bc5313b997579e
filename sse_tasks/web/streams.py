"""From the event log to SSE bytes: first snapshot, resume, resync, coalescing, end.

Each stream is its opening bytes and an async generator of pre-encoded chunks
(:class:`Body`) that :class:`SSEStream` sends as they come. A stream holds only a
cursor into the shared :class:`EventLog`; when it is behind it takes everything
pending (up to ``_BATCH`` events) in one chunk. Woken with nothing for it, a stream
yields ``b""``: the response's chance to send a heartbeat.

asyncio only: a following stream waits on the log's asyncio future directly, without a
coroutine of its own (see :mod:`sse_tasks.web.sse` for this path's deliberate deviations).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .._core.errors import Unavailable
from .._core.log import OutputFollow, PartitionedLog, PartKey, Vector, before, latest, order, reached
from .._core.models import (
    MAX_EVENT_ID_LENGTH,
    OUTPUT_EVENT,
    MalformedEvent,
    Task,
    TaskEvent,
    encode_frame,
    renumbered,
    reset_frame,
)
from .._core.text import ascii_int

if TYPE_CHECKING:
    from .._core.stats import HubStats
    from .backend import TaskBackend
    from .settings import WebSettings

logger = logging.getLogger("sse_tasks")

_BATCH = 512  # events per chunk: bounds what one slow stream holds in its send buffer
#: Tasks whose stored output a resumed stream reads at most (more: it resyncs instead).
_BACKFILL_TASKS = 200
#: Unfinished ``?task=`` tasks whose output a stream follows one by one (more: every task's).
_FOLLOW_EACH = 20
#: ``since`` when it is not known whether the log holds a task's output.
_UNKNOWN = object()


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tasks a stream covers: all, some ids, one task name and/or tags, and of those
    only what ``visible`` (the authorization hook's filter for this caller) allows."""

    task_ids: frozenset[str] | None = None
    name: str | None = None
    #: Only tasks carrying every one of these tags.
    tags: frozenset[str] = frozenset()
    visible: Callable[[Task], bool] | None = None
    #: Carry ``task.output`` events (per-task streams always do; ``/events`` with ``?output=1``).
    output: bool = False

    @property
    def everything(self) -> bool:
        return self.task_ids is None and self.name is None and not self.tags and self.visible is None

    def covers(self, task: Task) -> bool:
        return (
            (self.task_ids is None or task.id in self.task_ids)
            and (self.name is None or task.name == self.name)
            and self.tags.issubset(task.tags)
            and (self.visible is None or bool(self.visible(task)))
        )


class Body(NamedTuple):
    """What a stream sends: ``opening`` at once, then what ``follow`` yields (None:
    nothing); ``release`` once it is over (what the stream registered with the broker)."""

    opening: bytes
    follow: AsyncIterator[bytes] | None = None
    release: Callable[[], None] | None = None


class Resume:
    """A client's ``Last-Event-ID``, parsed by the broker.

    A per-task stream numbers the output it replays from storage ``<event id>~<seq>``:
    the client has the task as of that event, and its output up to chunk ``seq``. A
    per-task stream (``task``) resumed from a position of many tasks (a :class:`Vector`)
    resumes from its task's partition in it.
    """

    def __init__(self, runner: TaskBackend, raw: str | None, task: Task | None = None) -> None:
        self.raw = raw
        self.given = raw is not None
        self.key: Any = None
        self.output_seq: int | None = None  # the last replayed chunk the client has
        if raw is not None and len(raw) <= MAX_EVENT_ID_LENGTH:
            event_id, tilde, seq = raw.partition("~")
            self.output_seq = ascii_int(seq) if tilde else None
            if not tilde or self.output_seq is not None:
                self.key = runner.parse_event_id(event_id)
        if task is not None and isinstance(self.key, (Vector, PartKey)):
            own = _key(runner, task)
            if not isinstance(own, PartKey):
                self.key = None
            elif isinstance(self.key, Vector):
                part = self.key.parts[own.partition]
                self.key = PartKey(own.partition, part) if part is not None else None
            elif self.key.partition != own.partition:
                self.key = None  # another partition's event: no position in this task's

    @property
    def valid(self) -> bool:
        return self.key is not None


class StreamPlan:
    """What a stream does before it follows the log (decided before the response starts)."""

    __slots__ = (
        "backlog",
        "marker",
        "position",
        "replayed",
        "root_path",
        "runner",
        "selection",
        "settings",
        "single",
        "until",
        "vector",
    )

    def __init__(
        self, runner: TaskBackend, settings: WebSettings, selection: Selection, root_path: str
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.selection = selection
        self.root_path = root_path
        self.single: Task | None = None  # the task of a per-task stream
        self.backlog: list[TaskEvent] = []  # history from the broker, older than the log
        self.replayed: dict[str, int] = {}  # task id -> last output seq replayed from storage
        # A stream of many tasks resumed in a partitioned log: its own position, and the
        # log's position from which the log's own ids (and shared frames) are right for
        # it; until then it skips what it has and numbers what it sends itself.
        self.vector: Vector | None = None
        self.until = 0
        self.mark()

    def mark(self) -> None:
        """Take the log's position now: no event after it can be missed."""
        log = self.runner.log
        self.position = log.head
        last = log.last
        self.marker = (last.position or last.id) if last is not None else None


def snapshot_frame(task: Task, root_path: str, event_id: str | None = None) -> bytes:
    """A task's current snapshot as a frame typed as its last event (and, by default, numbered so)."""
    return encode_frame(event_id or task.event_id, task.event_type or "", task.to_dict(root_path))


def retry_frame(retry: int) -> bytes:
    return f"retry: {retry}\n\n".encode()


async def task_stream(plan: StreamPlan, resume: Resume) -> Body:
    """One task: its snapshot (or the missed events), each change, end after the terminal one.

    What needs the broker (history to resume from) is read here, before the response
    starts, so an outage answers 503 instead of a stream that is cut at once.
    """
    runner, task = plan.runner, plan.single
    assert task is not None
    if task.terminal:
        # All of its output is stored: nothing to follow. (A resume reads what it
        # missed from there, whether or not the log holds it.)
        return await _task_body(plan, task, resume, _UNKNOWN)
    # Output reaches this process's log only while a stream here follows it: register
    # before reading the stored output, so that no chunk falls between the two.
    follow = await runner.follow_output(task)
    try:
        body = await _task_body(plan, task, resume, follow.since)
    except BaseException:
        follow.close()
        raise
    if body.follow is None:
        follow.close()
        return body
    return body._replace(release=follow.close)


async def _task_body(plan: StreamPlan, task: Task, resume: Resume, since: Any) -> Body:
    runner = plan.runner
    position: int | None = None
    if resume.valid:
        position = await _resume_position(runner, resume.key, plan)
        if position is not None and resume.output_seq is None and _gap(plan, resume.key, since):
            position = await _backfill_output(plan, resume.key, position, [task])
    seen: dict[str, Any] = {}
    opening = [retry_frame(plan.settings.retry)]
    if position is None:
        if resume.given:
            opening.append(reset_frame(_reset_reason(resume)))
        opening.append(await _snapshot_and_output(plan, task, after=-1))
        if task.terminal:
            return Body(b"".join(opening))
        seen[task.id] = _key(runner, task)
        position = plan.position
    elif resume.output_seq is not None:
        # Resumed part way through a replay: the rest of it, then on from its base event.
        rest = await _replay_output(plan, task, after=resume.output_seq, base=resume.raw)
        if task.terminal:
            return Body(b"".join([*opening, rest, snapshot_frame(task, plan.root_path)]))
        opening.append(rest)
    return Body(b"".join(opening), _follow(plan, position, seen, until_terminal=True))


async def _snapshot_and_output(plan: StreamPlan, task: Task, *, after: int) -> bytes:
    """The snapshot and the stored output: of a finished task the snapshot comes last, so
    the terminal event is always a per-task stream's last (a client may stop there)."""
    snapshot = snapshot_frame(task, plan.root_path)
    replay = await _replay_output(plan, task, after=after)
    return replay + snapshot if task.terminal else snapshot + replay


async def _replay_output(plan: StreamPlan, task: Task, *, after: int, base: str | None = None) -> bytes:
    """The task's stored output chunks after ``after``, numbered ``<base event>~<seq>``."""
    chunks = [c for c in await plan.runner.output(task.id) if c.seq > after]
    if not chunks:
        return b""
    base_id = (base or "").partition("~")[0] or task.event_id
    plan.replayed[task.id] = chunks[-1].seq
    return b"".join(encode_frame(f"{base_id}~{c.seq}", OUTPUT_EVENT, c.to_dict()) for c in chunks)


def _gap(plan: StreamPlan, after: Any, since: Any) -> bool:
    """Whether output after ``after`` may be missing from what the stream is about to
    send: the log holds output only from ``since`` on (None: all of it), and history
    read from the broker (``plan.backlog``) holds none."""
    if since is _UNKNOWN:
        return True
    return since is not None and (before(after, since) or bool(plan.backlog))


async def _backfill_output(plan: StreamPlan, after: Any, position: int, tasks: Sequence[Task]) -> int | None:
    """The log holds output only from when this process began to follow it, later than
    ``after``: the stored chunks after ``after`` of ``tasks`` and of every covered task
    that changed since, merged in id order with the events from ``position`` to the
    log's head, become the stream's backlog. Returns the position the stream follows on
    from; None (resync) if too many tasks would have to be read."""
    runner, log, selection = plan.runner, plan.runner.log, plan.selection
    head, newest = log.head, log.newest
    events = [*plan.backlog, *log.read(position, head - position)]
    candidates = {task.id: task for task in tasks if selection.covers(task)}
    for event in events:
        if event.type != OUTPUT_EVENT:
            with contextlib.suppress(MalformedEvent):
                if event.task.id not in candidates and selection.covers(event.task):
                    candidates[event.task.id] = event.task
    if len(candidates) > _BACKFILL_TASKS:
        return None
    have = {event.key for event in events if event.type == OUTPUT_EVENT}
    for task in candidates.values():
        for chunk in await runner.output(task.id):
            key = runner.parse_event_id(chunk.event_id or "")
            # (What is newer than the log's head is still to come through the log.)
            if (
                key is not None
                and not reached(after, key)
                and (newest is None or reached(newest, key))
                and key not in have
            ):
                events.append(TaskEvent(chunk.event_id or "", key, OUTPUT_EVENT, task, chunk))
    events.sort(key=lambda event: event.key)
    plan.backlog = events
    return head


async def global_stream(plan: StreamPlan, resume: Resume) -> Body:
    """Many tasks on one connection: live from now, or resumed, or resynced.

    The resume point and any resync snapshots are read before the response starts.
    With output, the output of the tasks it covers is followed for the stream's life:
    of the ``?task=`` ones, else of every task.
    """
    if not plan.selection.output:
        return await _global_body(plan, resume, None, ())
    if plan.selection.task_ids is None:
        follow = await plan.runner.follow_output(None)
    else:
        follow = await _follow_chosen(plan.runner, plan.selection.task_ids)
    try:
        plan.mark()  # live from where the log holds the output followed
        body = await _global_body(plan, resume, follow.since, follow.tasks)
    except BaseException:
        follow.close()
        raise
    return body._replace(release=follow.close)


async def _follow_chosen(runner: TaskBackend, task_ids: frozenset[str]) -> OutputFollow:
    """One registration for the output of the chosen tasks, each followed on its own (a
    process reads no other task's output for this stream), or, past ``_FOLLOW_EACH``
    unfinished ones, every task's (each registration waits for the broker's reader). A
    finished one has all of its output stored: its ``since`` is unknown, so a resume
    reads what it missed from there."""
    tasks = [task for task in [await runner.find(task_id) for task_id in sorted(task_ids)] if task]
    unfinished = [task for task in tasks if not task.terminal]
    if len(unfinished) > _FOLLOW_EACH:
        return await runner.follow_output(None)
    follows: list[OutputFollow] = []

    def close() -> None:
        for follow in follows:
            follow.close()

    try:
        for task in unfinished:
            follows.append(await runner.follow_output(task))
    except BaseException:
        close()
        raise
    since: Any = _UNKNOWN if len(unfinished) < len(tasks) else None
    sinces = [follow.since for follow in follows if follow.since is not None]
    if since is None and sinces:
        since = latest(sinces, runner.log)
    return OutputFollow(since, close, tasks)


async def _global_body(plan: StreamPlan, resume: Resume, since: Any, tasks: Sequence[Task]) -> Body:
    runner = plan.runner
    position = plan.position
    seen: dict[str, Any] = {}
    opening = [retry_frame(plan.settings.retry)]
    if isinstance(resume.key, PartKey):
        resume.key = None  # one partition's event: no position in the others
    if resume.given:
        resumed = None
        if resume.valid:
            resumed = await _resume_position(runner, resume.key, plan)
            if resumed is not None and _gap(plan, resume.key, since):
                resumed = await _backfill_output(plan, resume.key, resumed, tasks)
        if resumed is None:
            opening.append(await _resync(plan, _reset_reason(resume), seen))
        else:
            position = resumed
    return Body(b"".join(opening), _follow(plan, position, seen, until_terminal=False))


def _reset_reason(resume: Resume) -> str:
    if not resume.valid:
        return "unknown or malformed Last-Event-ID"
    return "history no longer reaches back to Last-Event-ID"


def _key(runner: TaskBackend, task: Task) -> Any:
    return runner.parse_event_id(task.event_id) if task.event_id else None


async def _resume_position(runner: TaskBackend, key: Any, plan: StreamPlan) -> int | None:
    """Where in the log to continue after ``key``; None means resync."""
    log = runner.log
    if isinstance(key, Vector):
        return await _resume_vector(runner, key, plan)
    position = log.position_after(key)
    if position is not None:
        return position
    backlog = await runner.events_after(key)
    if backlog is None:
        return None
    plan.backlog = backlog
    last = backlog[-1].key if backlog else key
    return log.position_after(last)


async def _resume_vector(runner: TaskBackend, vector: Vector, plan: StreamPlan) -> int | None:
    """Where a stream of many tasks continues after ``vector`` in a partitioned log; None
    means resync. The stream skips what it has until the log's ids are right for it."""
    log = runner.log
    if not isinstance(log, PartitionedLog):
        return None
    resumed = log.resume(vector)
    if resumed is None:
        backlog = await runner.events_after(vector)
        if backlog is None:
            return None
        ahead = vector
        for event in backlog:
            ahead = ahead.advanced(event.key)
        resumed = log.resume(ahead)
        if resumed is None:
            return None
        plan.backlog = backlog
    plan.vector = vector
    plan.until = resumed[1]
    return resumed[0]


async def _resync(plan: StreamPlan, reason: str, seen: dict[str, Any]) -> bytes:
    """``event: reset`` then the current snapshot of every covered task, oldest change first.

    Snapshots carry the id of the newest event before the stream's position, so a
    client that reconnects after them resumes exactly there; live events a snapshot
    already includes are skipped through ``seen``. What a resume had planned (history
    to send first, a position of its own) is dropped: the snapshots replace it.
    """
    runner, selection = plan.runner, plan.selection
    plan.backlog, plan.vector = [], None
    marker = plan.marker or await runner.cursor()
    if selection.task_ids is not None:
        tasks = [t for t in [await runner.find(i) for i in selection.task_ids] if t]
    else:
        tasks = await runner.list_tasks(
            name=selection.name, tags=tuple(selection.tags), limit=max(runner.log.maxlen, 10_000)
        )
    keyed = sorted(
        ((k, t) for t in tasks if selection.covers(t) and (k := _key(runner, t)) is not None),
        key=lambda item: order(item[0]),
    )
    parts = [reset_frame(reason)]
    for key, task in keyed:
        seen[task.id] = key
        parts.append(snapshot_frame(task, plan.root_path, marker))
    return b"".join(parts)


def coalesce(events: list[TaskEvent]) -> list[TaskEvent]:
    """Drop each progress event that a later snapshot of the same task supersedes (an
    output chunk carries no snapshot: the progress before it stays)."""
    later: set[str] = set()
    kept: list[TaskEvent] = []
    for event in reversed(events):
        if event.type == OUTPUT_EVENT:
            kept.append(event)  # never dropped, and supersedes nothing
            continue
        try:
            task_id = event.task.id
        except MalformedEvent:
            kept.append(event)  # skipped when selected
            continue
        if event.state_change or task_id not in later:
            kept.append(event)
        later.add(task_id)
    kept.reverse()
    return kept


async def _follow(
    plan: StreamPlan, position: int, seen: dict[str, Any], *, until_terminal: bool
) -> AsyncIterator[bytes]:
    """Follow the log from ``position``: one loop, one chunk per turn.

    First the history ``plan.backlog`` (read before the response started), if any;
    then each turn either resyncs (:func:`_resync_behind`: the stream fell further
    behind than the log holds) or reads the next batch from the live log, waiting when
    there is none. A stream that takes every event as it is sends the bytes every such
    stream shares (:meth:`EventLog.joined`); any other sends what :func:`_select` keeps.
    A per-task stream (``until_terminal``) ends after its task's terminal event.
    """
    runner = plan.runner
    log, stats, root = runner.log, runner.stats, plan.root_path
    coalesce_after = plan.settings.coalesce_after
    takes_all, takes_output = plan.selection.everything, plan.selection.output
    single = plan.single.id if until_terminal and plan.single else None
    if plan.backlog:
        backlog, plan.backlog = plan.backlog, []
        chunk, finished = _select(plan, backlog, seen, single)
        yield chunk
        if finished:
            return
    while True:
        if position < log.first:
            chunk, finished = await _resync_behind(plan, seen, single, log.behind)
            if chunk:
                yield chunk
            if finished:
                return
            position = plan.position
            continue
        events = log.read(position, _BATCH)
        if not events:
            if log.closed:
                return
            # Awaited here, not in a helper: a waiting stream holds this one frame only.
            waiting = log.waiter()
            try:
                await waiting
            finally:
                log.forget(waiting)
            if position >= log.head:
                yield b""  # woken with nothing new (a heartbeat is due, or closing)
            continue
        start = position  # where in the log ``events`` were read (-1: no longer the log's slice)
        if plan.vector is not None and position >= plan.until:
            plan.vector = None  # the log's own ids are right for this stream from here
        position += len(events)
        if log.head - position + len(events) > coalesce_after:
            events = _coalesced(events, stats)
            start = -1
        if (
            takes_all
            and plan.vector is None
            and not seen
            and not plan.replayed
            and (takes_output or not any(e.type == OUTPUT_EVENT for e in events))
        ):
            try:
                if start >= 0:  # every stream woken at this position sends these bytes
                    joined = log.joined(start, events, root)
                else:
                    joined = b"".join([event.stream_frame(root) for event in events])
            except MalformedEvent:
                pass  # one cannot be decoded: _select leaves it out
            else:
                stats.events_delivered += len(events)
                yield joined
                continue
        chunk, finished = _select(plan, events, seen, single)
        yield chunk  # b"" when nothing was for this stream: see the module doc
        if finished:
            return


def _coalesced(events: list[TaskEvent], stats: HubStats) -> list[TaskEvent]:
    """``events`` with superseded progress dropped (the stream is far behind), counted."""
    kept = coalesce(events)
    stats.progress_coalesced += len(events) - len(kept)
    return kept


async def _resync_behind(
    plan: StreamPlan, seen: dict[str, Any], single: str | None, reason: str
) -> tuple[bytes, bool]:
    """The stream fell further behind than the log holds (or the broker's history
    restarted, e.g. a flushed Redis: ``reason`` says which): ``reset`` and the current
    snapshots, from the log's position now. Returns them, and whether the stream ends
    there (its task is finished or gone, or the broker is unavailable)."""
    runner = plan.runner
    seen.clear()
    plan.mark()
    try:
        if single is None:
            chunk = await _resync(plan, reason, seen)
            runner.stats.count_frames(chunk)
            return chunk, False
        task = await runner.find(single)
        if task is None:
            gone = reset_frame("the task is no longer in the broker's history")
            runner.stats.count_frames(gone)
            return gone, True
        plan.replayed.clear()
        resynced = await _snapshot_and_output(plan, task, after=-1)
        chunk = reset_frame(reason) + resynced
        runner.stats.count_frames(chunk)
        if not task.terminal:
            seen[single] = _key(runner, task)
        return chunk, task.terminal
    except Unavailable:
        # The client reconnects with its Last-Event-ID and is answered 503 until the
        # broker is back; ending here loses nothing.
        logger.warning("ended a stream that could not resync: the broker is unavailable")
        return b"", True


def _select(
    plan: StreamPlan, events: list[TaskEvent], seen: dict[str, Any], single: str | None
) -> tuple[bytes, bool]:
    """The frames of ``events`` this stream carries, and whether its task just ended.

    It skips tasks the selection does not cover, output it does not carry or already
    replayed from storage, and events a resync snapshot already included (``seen``).
    """
    selection, replayed, root = plan.selection, plan.replayed, plan.root_path
    parts: list[bytes] = []
    finished = False
    vector = plan.vector
    for event in events:
        if vector is not None:
            if vector.has(event.key):
                continue  # the stream has it (resumed in a partitioned log)
            vector = plan.vector = vector.advanced(event.key)
        output = event.type == OUTPUT_EVENT
        if output and not selection.output:
            continue  # output this stream does not carry (checked first: nothing is decoded)
        try:
            task = event.task
            if not selection.covers(task):
                continue
            # Replayed from storage already? (Only then is a chunk decoded here.)
            if (
                output
                and task.id in replayed
                and event.chunk is not None
                and event.chunk.seq <= replayed[task.id]
            ):
                continue
            if seen:
                seen_key = seen.get(task.id)
                if seen_key is not None:
                    if event.key <= seen_key:
                        continue
                    del seen[task.id]
            frame = event.stream_frame(root)
        except MalformedEvent:
            continue  # a broker's entry that cannot be decoded (logged there)
        if vector is not None:
            frame = _renumbered(frame, plan.runner.log, vector)
        parts.append(frame)
        if single is not None and not output and task.terminal:
            finished = True
            break
    plan.runner.stats.events_delivered += len(parts)
    return b"".join(parts), finished


def _renumbered(frame: bytes, log: Any, vector: Vector) -> bytes:
    """``frame`` (an event's, ``id:`` first) numbered with ``vector``, a position in ``log``."""
    assert isinstance(log, PartitionedLog)
    return renumbered(frame, log.name(vector))
