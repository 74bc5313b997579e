"""The contract's tasks on a taskiq broker (its Redis in ``$TASKIQ_REDIS_URL``, its queue
``$TASKIQ_QUEUE``), reported to the hub at ``$SSE_TASKS_BROKER``; workers touch
``$TASKIQ_READY`` once started."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import anyio.lowlevel
from _results import ODD_RESULTS
from taskiq import SimpleRetryMiddleware, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq.depends.progress_tracker import ProgressTracker
from taskiq_redis import ListQueueBroker

from sse_tasks import current_task
from sse_tasks.taskiq import StatusMiddleware

broker = ListQueueBroker(
    os.environ.get("TASKIQ_REDIS_URL", "redis://127.0.0.1:6379/1"),
    queue_name=os.environ.get("TASKIQ_QUEUE", "taskiq"),
    socket_timeout=None,  # its worker's BRPOP never times out (examples/taskiq_app.py)
)
broker.add_middlewares(SimpleRetryMiddleware(default_retry_count=3))
if os.environ.get("SSE_TASKS_BROKER"):
    broker.add_middlewares(StatusMiddleware(os.environ["SSE_TASKS_BROKER"]))


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def ready(state: TaskiqState) -> None:
    marker = os.environ.get("TASKIQ_READY")
    if marker:
        await anyio.Path(marker).write_text(str(os.getpid()))


@broker.task(task_name="add")
async def add(a: int, b: int = 1) -> int:
    return a + b


@broker.task(task_name="fail")
async def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@broker.task(task_name="odd")
async def odd(kind: str) -> Any:
    return ODD_RESULTS[kind][0]()


@broker.task(task_name="steps")
async def steps(n: int = 5, interval: float = 0.0, meta: bool = False) -> dict[str, int]:
    for i in range(1, n + 1):
        await anyio.sleep(interval)
        current_task().progress(i / n, f"step {i} of {n}")
        if meta:
            current_task().metadata(done=i, total=n)
    return {"n": n}


@broker.task(task_name="talk")
async def talk(words: int = 5) -> int:
    for i in range(words):
        current_task().output(f"w{i} ")
    current_task().log("done talking", "warning")
    return words


@broker.task(task_name="stubborn")
async def stubborn(seconds: float = 60.0, marker: str = "") -> str:
    deadline = anyio.current_time() + seconds
    try:
        while anyio.current_time() < deadline:
            try:
                current_task().check()
            except Exception:
                pass
            await anyio.sleep(0.02)
    finally:
        if marker:
            await anyio.Path(marker).write_text("stopped")
    return "never cancelled"


@broker.task(task_name="hog")
async def hog(seconds: float) -> str:
    """Holds the worker's event loop for ``seconds``: blocking code in an async task."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of it
    return "held"


@broker.task(task_name="touch")
async def touch(marker: str) -> str:
    await anyio.Path(marker).write_text("ran")
    return "touched"


@broker.task(task_name="burst")
async def burst(n: int = 1000) -> int:
    for i in range(n):
        current_task().progress((i + 1) / n)
        if i % 100 == 0:
            await anyio.lowlevel.checkpoint()
    return n


@broker.task(task_name="tracked")
async def tracked(
    gate: str,
    seconds: float = 30.0,
    tracker: ProgressTracker[dict[str, Any]] = TaskiqDepends(),  # noqa: B008
) -> str:
    """Reports with taskiq's own progress tracker (celery-progress's format), then waits
    (at most ``seconds``) until the file ``gate`` exists."""
    await tracker.set_progress("PROGRESS", {"current": 1, "total": 4, "description": "one of four"})
    deadline = anyio.current_time() + seconds
    while not await anyio.Path(gate).exists():
        if anyio.current_time() > deadline:
            raise TimeoutError("the gate never opened")
        await anyio.sleep(0.02)
    return "tracked"


@broker.task(task_name="tracked_steps")
async def tracked_steps(
    marker: str,
    n: int = 1000,
    interval: float = 0.02,
    tracker: ProgressTracker[dict[str, Any]] = TaskiqDepends(),  # noqa: B008
) -> str:
    """``n`` steps reported only with taskiq's own tracker; the file ``marker`` says how the
    loop ended (the exception's name, or ``done``) and at which step."""
    outcome, step = "done", 0
    try:
        for step in range(1, n + 1):
            await anyio.sleep(interval)
            await tracker.set_progress("PROGRESS", {"current": step, "total": n})
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        await anyio.Path(marker).write_text(f"{outcome} {step}")
    return "counted"


@broker.task(task_name="sync_steps")
def sync_steps(n: int = 3) -> str:
    """A sync task (taskiq's thread pool): its context reports the same way."""
    for i in range(1, n + 1):
        current_task().output(f"line {i}\n")
        current_task().progress(i / n, f"sync {i} of {n}")
        time.sleep(0.05)
    return "synced"


@broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
async def flaky(marker: str) -> int:
    """Fails on its first attempt (``marker`` does not exist yet), succeeds on its retry."""
    path = anyio.Path(marker)
    if not await path.exists():
        await path.write_text("failed once")
        current_task().output("first ")
        raise RuntimeError("first attempt")
    current_task().output("second")
    return 2
