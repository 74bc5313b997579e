"""Real ``arq`` worker processes for the tests (``arq arq_tasks.WorkerSettings``)."""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _support import Proc, spawn, worker_pythonpath

HERE = Path(__file__).resolve().parent


def db_url(url: str, db: int) -> str:
    """``url`` on database ``db`` (its query, such as ``?lease=``, dropped)."""
    base, _, _ = url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{db}"


def start_arq_worker(
    env: dict[str, str],
    settings: str = "arq_tasks.WorkerSettings",
    cwd: Path = HERE,
    ready: str = "arq tasks ready",
) -> Proc:
    """Start ``arq settings`` with ``env`` and wait until it logs ``ready``."""
    full_env = {**os.environ, **env, "PYTHONPATH": worker_pythonpath(cwd), "PYTHONUNBUFFERED": "1"}
    return spawn("arq worker", [sys.executable, "-m", "arq", settings], env=full_env, cwd=cwd, ready=ready)


def enqueue_job(url: str, queue: str, name: str, **params: Any) -> str:
    """arq's own ``enqueue_job`` on arq's Redis ``url`` (no hub involved): its job id. On
    an event loop of its own, in a thread, so that a test on its loop can call it."""
    from arq.connections import RedisSettings, create_pool

    async def send() -> str:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            job = await pool.enqueue_job(name, _queue_name=queue, **params)
            assert job is not None, f"arq already has a job of {name}'s id"
            return str(job.job_id)
        finally:
            await pool.aclose()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, send()).result(timeout=30)
