"""Real ``arq`` worker processes for the tests (``arq arq_tasks.WorkerSettings``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 60.0


def db_url(url: str, db: int) -> str:
    """``url`` on database ``db`` (its query, such as ``?lease=``, dropped)."""
    base, _, _ = url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{db}"


@dataclass
class ArqWorker:
    """One ``arq`` worker process (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"arq worker exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"arq worker never logged {needle!r}:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: nothing more is reported, no lease renewed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.stopped = True

    def stop(self) -> None:
        if self.stopped or self.proc.poll() is not None:
            self.stopped = True
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stopped = True


def start_arq_worker(
    env: dict[str, str],
    settings: str = "arq_tasks.WorkerSettings",
    cwd: Path = HERE,
    ready: str = "arq tasks ready",
) -> ArqWorker:
    """Start ``arq settings`` with ``env`` and wait until it logs ``ready``."""
    log = Path(tempfile.mkstemp(prefix="arq-worker-", suffix=".log")[1])
    path = os.pathsep.join([str(cwd), str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, **env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arq", settings],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = ArqWorker(proc, log)
    try:
        worker.wait_for(ready)
    except BaseException:
        worker.kill()
        raise
    return worker
