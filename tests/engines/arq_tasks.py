"""The arq app of the engine contract: the fake engine's tasks as arq functions, hooked.

Its Redis is ``$ARQ_REDIS_URL``, its queue ``$ARQ_TEST_QUEUE``; the workers report to
``$SSE_TASKS_BROKER``. Two jobs at a time per worker, as the contract expects.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from _results import ODD_RESULTS
from arq.connections import RedisSettings
from arq.worker import Retry

from sse_tasks import current_task
from sse_tasks.arq import hooked

QUEUE = os.environ.get("ARQ_TEST_QUEUE", "arq:queue")


async def add(ctx: dict[str, Any], a: int, b: int = 1) -> int:
    return a + b


async def fail(ctx: dict[str, Any], message: str = "boom") -> None:
    raise RuntimeError(message)


async def odd(ctx: dict[str, Any], kind: str) -> Any:
    return ODD_RESULTS[kind][0]()


async def steps(ctx: dict[str, Any], n: int = 5, interval: float = 0.0, meta: bool = False) -> dict[str, int]:
    for i in range(1, n + 1):
        await asyncio.sleep(interval)
        current_task().progress(i / n, f"step {i} of {n}")
        if meta:
            current_task().metadata(done=i, total=n)
    return {"n": n}


async def talk(ctx: dict[str, Any], words: int = 5) -> int:
    for i in range(words):
        current_task().output(f"w{i} ")
    current_task().log("done talking", "warning")
    return words


async def stubborn(ctx: dict[str, Any], seconds: float = 60.0, marker: str = "") -> str:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                current_task().check()
            except Exception:
                pass
            await asyncio.sleep(0.02)
    finally:
        if marker:
            Path(marker).write_text("stopped")  # noqa: ASYNC240 - a few bytes, in a test
    return "never cancelled"


async def hog(ctx: dict[str, Any], seconds: float) -> str:
    """Holds the worker's event loop for ``seconds``: blocking code in an async job."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of it
    return "held"


async def gated(ctx: dict[str, Any], gate: str, seconds: float = 60.0) -> str:
    """Waits (at most ``seconds``) until the file ``gate`` exists."""
    deadline = time.monotonic() + seconds
    while not Path(gate).exists() and time.monotonic() < deadline:  # noqa: ASYNC240 - a test's poll
        await asyncio.sleep(0.02)
    return "opened"


async def touch(ctx: dict[str, Any], marker: str) -> str:
    Path(marker).write_text("ran")  # noqa: ASYNC240 - a few bytes, in a test
    return "touched"


async def burst(ctx: dict[str, Any], reports: int = 1000) -> int:
    """Reports progress ``reports`` times without awaiting: coalesced, never blocking."""
    for i in range(1, reports + 1):
        current_task().progress(i / reports, f"{i}")
    await asyncio.sleep(0.3)
    return reports


async def retried(ctx: dict[str, Any]) -> str:
    """Raises arq's ``Retry`` (a short defer) on its first try; succeeds on its second."""
    if ctx["job_try"] == 1:
        raise Retry(defer=0.1)
    return f"try {ctx['job_try']}"


#: C functions that block their thread on I/O or time (sockets, polling, sleeping).
_BLOCKING_TYPES = (socket.SocketType, select.epoll, type(select.poll()))
_BLOCKING_FUNCTIONS = (time.sleep, select.select)


def _blocks(function: Any) -> bool:
    return isinstance(getattr(function, "__self__", None), _BLOCKING_TYPES) or function in _BLOCKING_FUNCTIONS


async def tight(ctx: dict[str, Any], calls: int = 2000) -> dict[str, Any]:
    """Calls ``current_task().progress()`` ``calls`` times in one stretch with no ``await``
    (the event loop cannot run between them), recording every call those reports make (a
    profile function: this thread only) to a socket, ``select``/``poll`` or ``time.sleep``:
    what would block the loop on I/O. Then it awaits a moment (the reports are published)."""
    blocking: list[str] = []

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and _blocks(arg):
            blocking.append(f"{arg!r} from {frame.f_code.co_filename}:{frame.f_lineno}")

    task = current_task()
    previous = sys.getprofile()
    started = time.perf_counter()
    sys.setprofile(watch)
    try:
        for i in range(1, calls + 1):
            task.progress(i / calls, f"{i} of {calls}")
    finally:
        sys.setprofile(previous)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.3)
    return {"calls": calls, "seconds": seconds, "blocking": len(blocking), "first": blocking[:3]}


async def cancelled_elsewhere(ctx: dict[str, Any]) -> None:
    """Awaits a future something else cancelled: a ``CancelledError`` of the job's own."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def ready(ctx: dict[str, Any]) -> None:
    print("arq tasks ready", flush=True)  # the tests wait for this line
    sys.stdout.flush()


class WorkerSettings:
    functions: ClassVar[list[Any]] = [
        *(add, fail, odd, steps, talk, stubborn, hog, touch),
        *(burst, gated, retried, tight, cancelled_elsewhere),
    ]
    redis_settings = RedisSettings.from_dsn(os.environ.get("ARQ_REDIS_URL", "redis://127.0.0.1:6379/5"))
    queue_name = QUEUE
    max_jobs = int(os.environ.get("ARQ_TEST_MAX_JOBS", "2"))
    poll_delay = 0.05
    on_startup = ready


hooked(WorkerSettings)
