"""A task backend that implements the web layer's protocol (``TaskBackend``) and nothing else.

No broker, no runner, no executor: tasks in a dict, events in a real ``EventLog``. The
web layer served from it proves that the protocol is all the web layer asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sse_tasks import NotFound, Task, TaskState
from sse_tasks._core.log import EventLog, OutputFollow
from sse_tasks._core.models import OutputChunk, TaskEvent, event_type_for
from sse_tasks._core.stats import HubStats

#: The members a fake adds for the test to drive it (not part of the protocol).
DRIVERS = frozenset({"add", "publish", "tasks", "seq"})


class FakeBackend:
    """The protocol's members, plus :meth:`add` and :meth:`publish` to drive it."""

    __slots__ = ("closing", "log", "queued", "registry", "running", "seq", "stats", "tasks")

    def __init__(self, names: tuple[str, ...] = ("count",)) -> None:
        self.log = EventLog(100)
        self.stats = HubStats()
        self.registry = frozenset(names)
        self.closing = False
        self.running = 0
        self.queued = 0
        self.tasks: dict[str, Task] = {}
        self.seq = 0

    # -- the protocol ------------------------------------------------------------------

    async def get(self, task_id: str, /) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}")
        return task

    async def find(self, task_id: str, /) -> Task | None:
        return self.tasks.get(task_id)

    def local_task(self, task_id: str, /) -> Task | None:
        return None

    async def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Task]:
        found = [
            t
            for t in reversed(self.tasks.values())
            if (state is None or t.state is state)
            and (name is None or t.name == name)
            and all(tag in t.tags for tag in tags)
        ]
        return found[:limit]

    async def cursor(self) -> str:
        return str(self.seq)

    def parse_event_id(self, event_id: str, /) -> Any | None:
        return int(event_id) if event_id.isdigit() else None

    async def events_after(self, key: Any, /) -> list[TaskEvent] | None:
        return None  # no history beyond the log: a stream that cannot resume resyncs

    async def output(self, task_id: str, /) -> list[OutputChunk]:
        return []

    async def follow_output(self, task: Task | None, /) -> OutputFollow:
        return OutputFollow(None)  # the log carries all output

    async def submit_json(
        self, name: str, params: Any, /, *, owner: str | None = None, tags: Sequence[str] = ()
    ) -> Task:
        if name not in self.registry:
            raise NotFound(f"no task named {name!r} is registered")
        return self.add(name, owner=owner)

    async def cancel(self, task_id: str, /) -> Task:
        return self.publish(await self.get(task_id), TaskState.CANCELLED)

    # -- driving it ----------------------------------------------------------------------

    def add(self, name: str, *, owner: str | None = None) -> Task:
        """A new ``queued`` task."""
        self.seq += 1
        return self.publish(Task(id=f"t{self.seq}", name=name, owner=owner), TaskState.QUEUED)

    def publish(self, task: Task, state: TaskState, **changes: Any) -> Task:
        """``task`` moved to ``state``: stored, and its event appended to the log."""
        self.seq += 1
        event_type = event_type_for(state)
        task = task.evolve(state=state, event_id=str(self.seq), event_type=event_type, **changes)
        self.tasks[task.id] = task
        self.log.append(TaskEvent(str(self.seq), self.seq, event_type, task))
        return task
