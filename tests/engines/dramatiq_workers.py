"""Real ``dramatiq`` worker processes for the engine contract suite.

The hub's Redis is database 0 of the session's redis-server; Dramatiq's own queue is
database 7 (each engine's on a database of its own).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from _support import Proc, redis_db, spawn, worker_pythonpath

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 60.0
DRAMATIQ_DB = 7


def environment(redis_url: str) -> dict[str, str]:
    """The environment of every worker and of the test process's actors."""
    return {
        "SSE_TASKS_BROKER": redis_db(redis_url, 0),
        "DRAMATIQ_REDIS_URL": redis_db(redis_url, DRAMATIQ_DB),
    }


def start_worker(redis_url: str, *extra: str, threads: int = 2, **env: str) -> Proc:
    """``dramatiq dramatiq_tasks`` with one process of ``threads`` threads, ready."""
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
    full_env = {
        **os.environ,
        **environment(redis_url),
        "dramatiq_worker_timeout": "100",  # an idle worker polls its queue every 0.1 s at most
        **env,
        "PYTHONPATH": worker_pythonpath(HERE),
    }
    return spawn(
        "dramatiq", command, env=full_env, cwd=HERE, ready="is ready for action", timeout=READY_TIMEOUT
    )


def dying_worker(hub_url: str, lease: float) -> tuple[Proc, str]:
    """A worker with a short lease on a queue of its own (one thread)."""
    queue_name = f"dying-{secrets.token_hex(4)}"
    env = {"SSE_TASKS_BROKER": f"{redis_db(hub_url, 0)}?lease={lease}", "TASKS_APP_QUEUE": queue_name}
    return start_worker(hub_url, f"--queues={queue_name}", threads=1, **env), queue_name


def enqueue_on(tasks: ModuleType, queue_name: str, name: str, params: dict[str, Any]) -> str:
    """Send ``name(**params)`` to the queue ``queue_name`` (the engine's own API)."""
    import dramatiq

    actor = tasks.actors[name]
    message: Any = dramatiq.Message(
        queue_name=queue_name, actor_name=actor.actor_name, args=(), kwargs=params, options={}
    )
    return str(tasks.broker.enqueue(message).message_id)
