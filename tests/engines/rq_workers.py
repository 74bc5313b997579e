"""Real ``rq worker`` processes for the engine contract (``--worker-class sse_tasks.rq.Worker``),
running the fake engine's task functions (``fake.add``, …) from this directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class RQWorker:
    """One ``rq worker`` (its own process group; each job's horse in a group of its own)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def horses(self) -> list[int]:
        """The work horses it forked (running a job now)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL the worker and its horse: nothing more is reported or renewed."""
        horses = self.horses()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            for pid in self.horses():  # a task left running (a test that failed) ends now
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


def start_rq_worker(rq_url: str, hub_url: str, queue: str) -> RQWorker:
    """An ``rq worker`` on ``queue`` of ``rq_url`` reporting to ``hub_url``, once it listens."""
    log = Path(tempfile.mkstemp(prefix="rq-worker-", suffix=".log")[1])
    command = [
        sys.executable, "-m", "rq.cli", "worker",
        "--worker-class", "sse_tasks.rq.Worker",
        "--url", rq_url,
        "--name", f"w-{os.getpid()}-{time.monotonic_ns()}",
        queue,
    ]  # fmt: skip
    path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "SSE_TASKS_BROKER": hub_url, "PYTHONPATH": path}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = RQWorker(proc, log)
    deadline = time.monotonic() + 30
    while "Listening on" not in worker.text() and "listening on" not in worker.text().lower():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"rq worker did not start:\n{worker.text()[-3000:]}")
        time.sleep(0.05)
    return worker
