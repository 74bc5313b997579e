"""What the worker side's writers send to Redis and how they read the answers: shared by
the blocking :class:`~.sync.SyncWriter` and the asyncio :class:`~.async_writer.AsyncWriter`,
which differ only in how they wait."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._core.models import OutputChunk, Task, TaskState, event_type_for
from .keys import Keys
from .link import UNREACHABLE
from .records import text
from .scripts import Scripts

if TYPE_CHECKING:
    from . import RedisBroker

#: ``(task, event type, publish options)``: one write of ``publish_many``.
Write = tuple[Task, str, dict[str, Any]]
#: A ``running`` not stored yet and its ``queued`` snapshot (see ``WorkerWriter``).
Started = tuple[Task, "Task | None"]

CANCELLED = TaskState.CANCELLED.value.encode()


class Writing:
    """The commands of a writer over ``broker``'s keys, from its public options only."""

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

    def _publish_calls(self, items: Sequence[Write]) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [
            (self._keys.publish(task.id), self.broker.publish_args(task, event_type, **options))
            for task, event_type, options in items
        ]

    def _queue_publishes(self, pipe: Any, calls: list[tuple[dict[str, str], dict[str, Any]]]) -> None:
        for keys, args in calls:
            self._scripts.publish.queue_sync(pipe, keys, args)

    def _queue_receive(self, pipe: Any, queued: Task) -> None:
        args = self.broker.publish_args(queued, "task.queued", lease="none")
        self._scripts.publish.queue_sync(pipe, self._keys.publish(queued.id), args)
        pipe.hget(self._keys.task(queued.id), "s")
        pipe.exists(self._keys.refused(queued.id))

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

    def _output_call(self, chunk: OutputChunk) -> tuple[dict[str, str], dict[str, Any]]:
        return self._keys.publish_output(chunk.task_id), self.broker.output_args(chunk)

    @staticmethod
    def _event_id(reply: Any) -> str | None:
        return None if reply is None else text(reply[0])

    @staticmethod
    def _finished(state: Any) -> bool:
        return state is not None and TaskState(text(state)).terminal

    @staticmethod
    def _failed_on(replies: list[Any]) -> bool:
        """True if Redis lost the scripts (restarted, flushed): load them and run again."""
        import redis

        return any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies)

    @staticmethod
    def _raise_errors(replies: list[Any]) -> list[Any]:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


def final_write(task: Task, create: Task | None) -> Write:
    return (task, event_type_for(task.state), {"lease": "xx", "create": create})


def requeue_write(task: Task) -> Write:
    return (task, "task.queued", {"lease": "none", "requeue": True})


def after(started: Started | None, item: Write) -> list[Write]:
    """``item``, after the pending ``running`` of ``started`` if there is one."""
    if started is None:
        return [item]
    running, queued = started
    return [(running, "task.running", {"lease": "add", "create": queued}), item]


def pack_with_hiredis(pool: Any) -> None:
    """Make the connections of ``pool`` (a redis-py connection pool, blocking or asyncio)
    pack each command with one call to hiredis: redis-py's asyncio client packs in Python
    and its blocking one converts each argument in Python first, most of a worker hook's
    CPU per task (each write is a script with some thirty arguments, all ``str``,
    ``bytes`` or ``int``). Left as it is without hiredis."""
    try:
        import hiredis
    except ImportError:  # pragma: no cover - the extras install hiredis
        return
    base = pool.connection_class
    fallback = base.pack_command

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
            args = (*first.split(), *args[1:])  # "CLIENT SETNAME": one argument per word
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # an argument hiredis does not take: redis-py's own packing
            return list(fallback(self, *args))

    def pack_commands(self: Any, commands: Any) -> list[bytes]:
        return [b"".join(chunk for command in commands for chunk in pack_command(self, *command))]

    methods = {"pack_command": pack_command, "pack_commands": pack_commands}
    pool.connection_class = type(f"Hiredis{base.__name__}", (base,), methods)
