"""What the worker side's writers send to Redis and how they read the answers: shared by
the blocking :class:`~.sync.SyncWriter` and the asyncio :class:`~.async_writer.AsyncWriter`,
which differ only in how they wait (each on a :class:`~.wire.Wire` of its kind)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..._core.models import OutputChunk, Task, TaskState, event_type_for
from .keys import Keys
from .link import UNREACHABLE
from .records import text
from .scripts import Scripts
from .wire import Command

if TYPE_CHECKING:
    from . import RedisBroker

#: ``(task, event type, publish options)``: one write of ``publish_many``.
Write = tuple[Task, str, dict[str, Any]]
#: A ``running`` not stored yet and its ``queued`` snapshot (see ``WorkerWriter``).
Started = tuple[Task, "Task | None"]

CANCELLED = TaskState.CANCELLED.value.encode()


class Writing:
    """The commands of a writer over ``broker``'s keys, from its public options only, and
    how their replies read; the blocking and the asyncio writer send them on a
    :class:`~.wire.Wire` of their kind."""

    #: What a call raises while Redis cannot be reached.
    unreachable: tuple[type[BaseException], ...] = UNREACHABLE

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.lease = broker.lease
        self.outage_grace = broker.outage_grace
        self._keys = Keys(broker.key_prefix)
        self._scripts = Scripts()
        self._lease_ms = max(1, round(broker.lease * 1000))
        self._client_name = f"sse-tasks-{broker.worker_id}-worker"
        self._malformed: set[str] = set()  # ids of records warned about (``task_or_none``)
        s = self._scripts
        #: The scripts a writer runs, loaded again if Redis lost them (``Wire.send``).
        self._sources = tuple(script.source for script in (s.publish, s.output, s.renew, s.chunks))

    # -- commands --------------------------------------------------------------------

    def _publishes(self, items: Sequence[Write]) -> list[Command]:
        publish = self._scripts.publish
        return [
            publish.command(
                self._keys.publish(task.id), self.broker.publish_args(task, event_type, **options)
            )
            for task, event_type, options in items
        ]

    def _receive(self, queued: Task) -> list[Command]:
        args = self.broker.publish_args(queued, "task.queued", lease="none")
        return [
            self._scripts.publish.command(self._keys.publish(queued.id), args),
            ("HGET", self._keys.task(queued.id), "s"),
            ("EXISTS", self._keys.refused(queued.id)),
        ]

    def _output(self, chunk: OutputChunk) -> Command:
        return self._scripts.output.command(
            self._keys.publish_output(chunk.task_id), self.broker.output_args(chunk)
        )

    def _renew(self, task_ids: Sequence[str]) -> Command:
        return self._scripts.renew.command(
            {"leases": self._keys.leases}, {"lease_ms": self._lease_ms}, task_ids
        )

    def _get(self, task_id: str) -> Command:
        return ("HMGET", self._keys.task(task_id), "d", "i", "t")

    def _chunks(self, task_id: str) -> Command:
        return self._scripts.chunks.command(self._keys.chunks(task_id), {})

    def _state(self, task_id: str) -> Command:
        return ("HGET", self._keys.task(task_id), "s")

    # -- replies ---------------------------------------------------------------------

    @staticmethod
    def _received(replies: list[Any]) -> str | None:
        created, state, refused = replies
        if created is not None:
            return "queued"
        if state is not None:
            return text(state)
        # Neither created nor stored: refused, or it finished and expired meanwhile.
        return "refused" if refused else None

    @staticmethod
    def _stored(items: Sequence[Write], replies: list[Any]) -> list[Task | None]:
        return [
            None if reply is None else task.evolve(event_id=text(reply[0]), event_type=event_type)
            for (task, event_type, _), reply in zip(items, replies, strict=True)
        ]

    @staticmethod
    def _event_id(reply: Any) -> str | None:
        return None if reply is None else text(reply[0])

    @staticmethod
    def _finished(state: Any) -> bool:
        return state is not None and TaskState(text(state)).terminal

    @staticmethod
    def _finished_of(task_ids: Sequence[str], states: list[Any]) -> set[str]:
        return {task_id for task_id, state in zip(task_ids, states, strict=True) if Writing._finished(state)}

    @staticmethod
    def _cancelled_of(task_ids: Sequence[str], states: list[Any]) -> list[str]:
        return [task_id for task_id, state in zip(task_ids, states, strict=True) if state == CANCELLED]

    @staticmethod
    def _raise_errors(replies: list[Any]) -> list[Any]:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


def final_write(task: Task, create: Task | None, started: Started | None = None) -> Write:
    """The terminal snapshot ``task``, after ``started`` (see :func:`after`)."""
    return after(started, (task, event_type_for(task.state), {"lease": "xx", "create": create}))


def requeue_write(task: Task, started: Started | None = None) -> Write:
    """``task`` back to ``queued`` (a retry), after ``started`` (see :func:`after`)."""
    return after(started, (task, "task.queued", {"lease": "none", "requeue": True}))


def after(started: Started | None, item: Write) -> Write:
    """``item``, with the pending ``running`` of ``started`` (if there is one) appended
    before it by the same call: one compare-and-set for both; ``started``'s ``queued``
    snapshot creates the task if nobody stored it."""
    if started is None:
        return item
    running, queued = started
    task, event_type, options = item
    return (task, event_type, {**options, "started": running, "create": options.get("create") or queued})


W = TypeVar("W")


class Routes(Generic[W]):
    """One writer per partition, and which one a task's writes go to."""

    def __init__(self, broker: RedisBroker, make: Callable[[RedisBroker], W]) -> None:
        self.writers: list[W] = [make(part) for part in broker.parts]
        self._index: Callable[[str], int] = broker.partition_index

    def of(self, task_id: str) -> W:
        return self.writers[self._index(task_id)]

    def split(self, task_ids: Iterable[str]) -> list[tuple[W, list[str]]]:
        """``task_ids`` by partition: each partition's writer and its ids."""
        groups: dict[int, list[str]] = {}
        for task_id in task_ids:
            groups.setdefault(self._index(task_id), []).append(task_id)
        return [(self.writers[index], ids) for index, ids in groups.items()]

    def split_items(self, items: Sequence[Write]) -> list[tuple[W, list[int]]]:
        """The positions of ``items`` by partition (each partition's in order)."""
        groups: dict[int, list[int]] = {}
        for position, (task, _, _) in enumerate(items):
            groups.setdefault(self._index(task.id), []).append(position)
        return [(self.writers[index], positions) for index, positions in groups.items()]


def each(writers: Sequence[W], call: Callable[[W], object]) -> None:
    """``call`` each of ``writers``, every one whatever the others raise; then raise the
    first error."""
    error: BaseException | None = None
    for writer in writers:
        try:
            call(writer)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


async def each_async(writers: Sequence[W], call: Callable[[W], Awaitable[object]]) -> None:
    error: BaseException | None = None
    for writer in writers:
        try:
            await call(writer)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
