"""A fake engine: everything an engine adapter needs, and nothing else.

The web side is a :class:`RemoteEngine` whose queue is an in-memory queue; its "workers"
are threads in the test process that report through the public worker side
(``WorkerRun``, ``Keeper``, ``SyncWriter``) on the hub's real Redis broker.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _results import ODD_RESULTS

from sse_tasks import Task, TaskState, current_task
from sse_tasks.brokers.redis import RedisBroker
from sse_tasks.engines import Job, Keeper, NotSent, RemoteEngine, SyncWriter, WorkerRun
from sse_tasks.engines.tags import sent_tags


def add(a: int, b: int = 1) -> int:
    return a + b


def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def steps(n: int = 5, interval: float = 0.0, meta: bool = False) -> dict[str, int]:
    for i in range(1, n + 1):
        time.sleep(interval)
        current_task().progress(i / n, f"step {i} of {n}")
        if meta:
            current_task().metadata(done=i, total=n)
    return {"n": n}


def talk(words: int = 5) -> int:
    for i in range(words):
        current_task().output(f"w{i} ")
    current_task().log("done talking", "warning")
    return words


def stubborn(seconds: float = 60.0, marker: str = "") -> str:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                current_task().check()
            except Exception:
                pass
            time.sleep(0.02)
    finally:
        if marker:
            Path(marker).write_text("stopped")
    return "never cancelled"


def hog(seconds: float) -> str:
    """Holds its thread (an asyncio engine's event loop) for ``seconds``, reporting nothing."""
    time.sleep(seconds)
    return "held"


def touch(marker: str) -> str:
    Path(marker).write_text("ran")
    return "touched"


def odd(kind: str) -> Any:
    """A result that is not JSON (``_results.ODD_RESULTS``), which every engine's own
    result store takes: the task fails with the encoding error."""
    return ODD_RESULTS[kind][0]()


TASKS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (add, fail, steps, talk, stubborn, hog, touch, odd)
}


@dataclass
class Message:
    task: Task
    params: dict[str, Any]
    from_hub: bool


class FakeEngine(RemoteEngine):
    """The web side: sends to the in-memory queue (or cannot: ``reachable=False``)."""

    name = "fake"

    def __init__(self, messages: queue.Queue[Message | None], *, reachable: bool = True) -> None:
        super().__init__()
        self.messages, self.reachable = messages, reachable

    def registrations(self) -> list[tuple[str, Callable[..., Any]]]:
        return list(TASKS.items())

    async def send(self, job: Job) -> None:
        if not self.reachable:
            raise NotSent("the fake queue is unreachable")
        self.messages.put(Message(job.task, job.params, from_hub=True))

    async def revoke(self, task: Task) -> None:
        pass  # a running task sees its stored state; a waiting one is discarded when taken


class FakeWorkers:
    """The worker side: ``threads`` threads taking messages, each run through a WorkerRun."""

    def __init__(self, messages: queue.Queue[Message | None], broker_url: str, threads: int = 2) -> None:
        self.messages = messages
        self.writer = SyncWriter(RedisBroker(broker_url))
        self.runs: dict[int, WorkerRun] = {}
        self.keeper = Keeper(self.runs, self.writer)
        self.killed = threading.Event()
        # A killed process's hog ends with it; these threads are joined instead.
        self.tasks = {**TASKS, "hog": self._hog}
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def enqueue(self, name: str, **params: Any) -> str:
        """The engine's own enqueue (no hub): the sender stores the task ``queued``."""
        return self.enqueue_tagged([], name, **params)

    def enqueue_tagged(self, tags: list[str], name: str, **params: Any) -> str:
        """:meth:`enqueue`, the task carrying ``tags`` (the sender's, checked as a hook does)."""
        task = Task(id=secrets.token_urlsafe(12), name=name, tags=sent_tags(tags))
        self.writer.create(task)
        self.messages.put(Message(task, params, from_hub=False))
        return task.id

    def kill(self) -> None:
        """The workers die mid-task: nothing more is reported, no lease renewed."""
        for run in list(self.runs.values()):
            run.end(cancelled=True)  # stores nothing; the body stops at its next check()
        self.killed.set()
        self.close()

    def close(self) -> None:
        for _ in self.threads:
            self.messages.put(None)
        for thread in self.threads:
            thread.join(10)
        self.keeper.stop()
        self.writer.close()

    def _hog(self, seconds: float) -> str:
        self.killed.wait(seconds)  # holds its thread as ``hog`` does, until the kill
        return "held"

    def _work(self) -> None:
        while (message := self.messages.get()) is not None:
            self._run(message)

    def _run(self, message: Message) -> None:
        queued = message.task
        if message.from_hub and self.writer.receive(queued) != TaskState.QUEUED.value:
            return  # refused (the hub answered 503), cancelled while it waited, or gone
        run = WorkerRun(queued, message.params, self.writer, wake=self.keeper.wake)
        self.runs[id(run)] = run
        self.keeper.ensure_started()
        run.start()
        try:
            run.execute(self.tasks[queued.name])
        finally:
            self.runs.pop(id(run), None)
