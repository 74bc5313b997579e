"""Real ``taskiq worker`` processes for the engine contract (their own process group)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class TaskiqWorker:
    """One ``taskiq worker taskiq_tasks:broker`` (one process, ``max_async`` tasks at once)."""

    def __init__(self, env: dict[str, str], max_async: int = 2) -> None:
        self.ready = Path(tempfile.mkstemp(prefix="taskiq-ready-")[1])
        self.ready.unlink()
        self.log = Path(tempfile.mkstemp(prefix="taskiq-", suffix=".log")[1])
        command = [
            sys.executable, "-m", "taskiq", "worker", "taskiq_tasks:broker",
            "--workers", "1", "--max-async-tasks", str(max_async), "--no-configure-logging",
        ]  # fmt: skip
        path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
        full = {**os.environ, **env, "TASKIQ_READY": str(self.ready), "PYTHONPATH": path}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, env=full, cwd=HERE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"taskiq worker never started:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.ready.unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)


def enqueue(env: dict[str, str], name: str, labels: dict[str, Any] | None = None, **params: Any) -> str:
    """``.kiq()`` from a sender of its own (no hub), on a loop in a thread of its own."""
    found: list[str] = []

    async def send() -> None:
        from taskiq.kicker import AsyncKicker
        from taskiq_redis import ListQueueBroker

        from sse_tasks.taskiq import StatusMiddleware

        broker = ListQueueBroker(env["TASKIQ_REDIS_URL"], queue_name=env["TASKIQ_QUEUE"])
        broker.add_middlewares(StatusMiddleware(env["SSE_TASKS_BROKER"]))
        await broker.startup()
        try:
            sent = await AsyncKicker(task_name=name, broker=broker, labels=labels or {}).kiq(**params)
            found.append(sent.task_id)
        finally:
            await broker.shutdown()

    run_in_thread(lambda: asyncio.run(send()))
    return found[0]


def run_in_thread(call: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
