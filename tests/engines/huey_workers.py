"""Real ``huey_consumer`` processes for the engine contract suite."""

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


@dataclass
class Consumer:
    """One ``huey_consumer`` process (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"huey_consumer exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"huey_consumer never logged {needle!r}:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)  # graceful: running tasks finish
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def start_consumer(env: dict[str, str], workers: int = 2, app: str = "huey_tasks.huey") -> Consumer:
    """``huey_consumer app -w workers -k thread`` with ``env``, once it has started."""
    log = Path(tempfile.mkstemp(prefix="huey-", suffix=".log")[1])
    consumer = Path(sys.executable).parent / "huey_consumer"
    command = [str(consumer), app, "-w", str(workers), "-k", "thread", "-v"]
    path = os.pathsep.join([str(HERE), str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, **env, "PYTHONPATH": path}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=HERE, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = Consumer(proc, log)
    try:
        started.wait_for("Huey consumer started")
    except BaseException:
        started.kill()
        raise
    return started
