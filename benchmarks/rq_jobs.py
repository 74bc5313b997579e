"""The RQ benchmark's jobs (``benchmarks/engines.py``): imported by each work horse, so
kept light."""

from __future__ import annotations

import os
import time


def noop() -> int:
    """Nothing, or ``$BENCH_WORK_MS`` of CPU (a small real task); returns when it ended
    (``time.monotonic_ns()``, one clock for every process)."""
    work = float(os.environ.get("BENCH_WORK_MS") or 0) / 1000
    if work:
        end = time.thread_time() + work
        while time.thread_time() < end:
            pass
    return time.monotonic_ns()
