"""The hub ``benchmarks/multiprocess.py`` serves in each ``sse-tasks serve --app
benchmarks.multiprocess_app:hub`` process (its broker from ``--broker``).

The demo tasks, with ``generate`` writing exactly the demo's output but stamping each
log line (one chunk in 11) with ``ts=<time.monotonic_ns()>`` when it is written, so a
follower on any process of the machine measures its delivery latency. The history is
raised so a follower that lags never falls behind it (a reset would end the run).
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from sse_tasks import TaskContext, TaskHub
from sse_tasks.demo import register_demo_tasks, word

#: Events each process's log (and the Redis stream) keeps.
HISTORY = 100_000


async def generate(ctx: TaskContext, words: int = 50, delay: float = 0.05) -> dict[str, Any]:
    """The demo's ``generate``, each log line stamped with its time of writing."""
    for i in range(words):
        if delay:
            await anyio.sleep(delay)
        elif i % 100 == 0:
            await anyio.lowlevel.checkpoint()
        ctx.output(f"{word(i)} ")
        if (i + 1) % 10 == 0:
            ctx.log(f"{i + 1} of {words} words ts={time.monotonic_ns()}")
    return {"words": words}


def make_hub() -> TaskHub:
    """The hub: ``generate`` stamped, the other demo tasks as they are."""
    made = TaskHub(history=HISTORY, max_streams=1 << 20)
    made.register(generate)
    register_demo_tasks(made)
    return made


hub = make_hub()
