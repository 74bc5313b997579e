"""Real ``arq`` worker processes for the tests (``arq arq_tasks.WorkerSettings``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
