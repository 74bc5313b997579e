"""Task functions for the RQ-specific tests (imported by the ``rq worker`` processes)."""

from __future__ import annotations

import time
from pathlib import Path

import rq


def meta_steps(n: int = 3, interval: float = 0.15) -> int:
    """Progress through RQ's own ``job.meta`` in celery-progress's keys."""
    job = rq.get_current_job()
    assert job is not None
    for i in range(1, n + 1):
        time.sleep(interval)
        job.meta.update(current=i, total=n, description=f"step {i} of {n}")
        job.save_meta()
    return n


def meta_fraction(gate: str, fraction: float = 0.4, message: str = "working", seconds: float = 30.0) -> str:
    """Progress through RQ's own ``job.meta`` in sse_tasks' keys (``progress``, a fraction,
    and ``message``); then waits (at most ``seconds``) until the file ``gate`` exists."""
    job = rq.get_current_job()
    assert job is not None
    job.meta.update(progress=fraction, message=message)
    job.save_meta()  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + seconds
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.02)
    return "read"


def flaky(marker: str) -> str:
    """Fails on its first attempt, succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt")
    return "second attempt"


def sleeper(seconds: float = 60.0) -> str:
    """Never reports or checks: only killing its work horse stops it."""
    time.sleep(seconds)
    return "slept"
