"""Real ``dramatiq`` worker processes for the engine contract suite.

The hub's Redis is database 0 of the session's redis-server; Dramatiq's own queue is
database 7 (each engine's on a database of its own).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 60.0
DRAMATIQ_DB = 7


def _db(url: str, db: int) -> str:
    base, _, _ = url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{db}"


def environment(redis_url: str) -> dict[str, str]:
    """The environment of every worker and of the test process's actors."""
    return {"SSE_TASKS_BROKER": _db(redis_url, 0), "DRAMATIQ_REDIS_URL": _db(redis_url, DRAMATIQ_DB)}


@dataclass
class Worker:
    """One ``dramatiq`` command (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dramatiq exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dramatiq never logged {needle!r}:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and worker processes."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.stopped = True

    def stop(self) -> None:
        if not self.stopped and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.stopped = True
        self.log.unlink(missing_ok=True)


def start_worker(redis_url: str, *extra: str, threads: int = 2, **env: str) -> Worker:
    """``dramatiq dramatiq_tasks`` with one process of ``threads`` threads, ready."""
    log = Path(tempfile.mkstemp(prefix="dramatiq-", suffix=".log")[1])
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "dramatiq_tasks",
        "--processes=1",
        f"--threads={threads}",
        "--worker-shutdown-timeout=5000",
        *extra,
    ]
    path = os.pathsep.join([str(HERE), str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    full_env = {
        **os.environ,
        **environment(redis_url),
        "dramatiq_worker_timeout": "100",  # an idle worker polls its queue every 0.1 s at most
        **env,
        "PYTHONPATH": path,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=HERE, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(proc, log)
    try:
        worker.wait_for("is ready for action")
    except BaseException:
        worker.kill()
        raise
    return worker


def dying_worker(hub_url: str, lease: float) -> tuple[Worker, str]:
    """A worker with a short lease on a queue of its own (one thread)."""
    queue_name = f"dying-{secrets.token_hex(4)}"
    env = {"SSE_TASKS_BROKER": f"{_db(hub_url, 0)}?lease={lease}", "TASKS_APP_QUEUE": queue_name}
    return start_worker(hub_url, f"--queues={queue_name}", threads=1, **env), queue_name


def enqueue_on(tasks: ModuleType, queue_name: str, name: str, params: dict[str, Any]) -> str:
    """Send ``name(**params)`` to the queue ``queue_name`` (the engine's own API)."""
    import dramatiq

    actor = tasks.actors[name]
    message: Any = dramatiq.Message(
        queue_name=queue_name, actor_name=actor.actor_name, args=(), kwargs=params, options={}
    )
    return str(tasks.broker.enqueue(message).message_id)
