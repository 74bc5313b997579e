"""Real ``rq worker`` processes for the engine contract (``--worker-class sse_tasks.rq.Worker``),
running the fake engine's task functions (``fake.add``, …) from this directory."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _support import Proc, spawn, worker_pythonpath

HERE = Path(__file__).resolve().parent


@dataclass
class RQWorker(Proc):
    """One ``rq worker``; each job's work horse runs in a process group of its own."""

    def horses(self) -> list[int]:
        """The work horses it forked (running a job now)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (OSError, ValueError):
            return []

    def _kill_horses(self) -> None:
        for pid in self.horses():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the worker and its horse: nothing more is reported or renewed."""
        horses = self.horses()
        super().kill()
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def signal_stop(self) -> None:
        if not self.stopped and self.proc.poll() is None:
            self._kill_horses()  # a task left running (a test that failed) ends now
        super().signal_stop()


def start_rq_worker(rq_url: str, hub_url: str, queue: str) -> RQWorker:
    """An ``rq worker`` on ``queue`` of ``rq_url`` reporting to ``hub_url``, once it listens."""
    command = [
        sys.executable, "-m", "rq.cli", "worker",
        "--worker-class", "sse_tasks.rq.Worker",
        "--url", rq_url,
        "--name", f"w-{os.getpid()}-{time.monotonic_ns()}",
        queue,
    ]  # fmt: skip
    env = {**os.environ, "SSE_TASKS_BROKER": hub_url, "PYTHONPATH": worker_pythonpath(HERE)}
    ready = lambda text: "listening on" in text.lower()  # noqa: E731
    return spawn("rq worker", command, env=env, cwd=HERE, ready=ready, timeout=30, kind=RQWorker)
