"""Real ``huey_consumer`` processes for the engine contract suite."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from _support import Proc, spawn, worker_pythonpath

HERE = Path(__file__).resolve().parent


def start_consumer(env: dict[str, str], workers: int = 2, app: str = "huey_tasks.huey") -> Proc:
    """``huey_consumer app -w workers -k thread`` with ``env``, once it has started; stopped
    with SIGINT (graceful: running tasks finish)."""
    consumer = Path(sys.executable).parent / "huey_consumer"
    command = [str(consumer), app, "-w", str(workers), "-k", "thread", "-v"]
    full_env = {**os.environ, **env, "PYTHONPATH": worker_pythonpath(HERE)}
    return spawn(
        "huey_consumer",
        command,
        env=full_env,
        cwd=HERE,
        ready="Huey consumer started",
        stop_signal=signal.SIGINT,
    )
