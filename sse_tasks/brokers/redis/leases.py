"""Leases: the process that queued a task renews it; any process fails a task whose lease lapsed."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from redis.asyncio import Redis

from ..._core.errors import Unavailable
from ..._core.models import Task, TaskEvent, TaskState, utcnow
from .keys import Keys
from .link import UNREACHABLE, Link
from .records import text
from .scripts import Scripts

logger = logging.getLogger("sse_tasks.redis")

_SWEEP_BATCH = 100
WORKER_LOST = {"type": "WorkerLost", "message": "the worker running this task stopped; its lease lapsed"}


class LeaseKeeper:
    """Renews the leases of this process's unfinished tasks every ``lease / 4`` seconds and
    fails, as ``WorkerLost``, the tasks of processes that stopped renewing theirs.

    A process sweeps only after it has been connected for a full lease period, so owners
    that were cut off by the same outage renew first.
    """

    def __init__(
        self,
        lease: float,
        keys: Keys,
        scripts: Scripts,
        link: Link,
        get: Callable[[str], Awaitable[Task | None]],
        fail_lapsed: Callable[[Task], Awaitable[TaskEvent | None]],
    ) -> None:
        self.lease = lease
        self.keys = keys
        self.scripts = scripts
        self.link = link
        self.get = get
        self.fail_lapsed = fail_lapsed
        #: Unfinished tasks queued by this process: it renews their leases.
        self.owned: set[str] = set()

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.lease * 1000))

    async def run(self, db: Redis) -> None:
        """Renew and sweep until cancelled; outages are the reader's to report."""
        while True:
            await anyio.sleep(self.lease / 4)
            try:
                if self.owned:
                    await self.scripts.renew(
                        db, {"leases": self.keys.leases}, {"lease_ms": self.lease_ms}, list(self.owned)
                    )
                since = self.link.connected_since
                if since is not None and time.monotonic() - since >= self.lease:
                    await self._sweep(db)
            except (Unavailable, *UNREACHABLE):
                pass
            except Exception:
                logger.exception("lease upkeep failed")

    async def _sweep(self, db: Redis) -> None:
        leases = self.keys.leases
        lapsed = await self.scripts.lapsed(db, {"leases": leases}, {"limit": _SWEEP_BATCH})
        for raw in lapsed:
            task_id = text(raw)
            if task_id in self.owned:
                continue  # this process is alive: its renewal is merely late
            task = await self.get(task_id)
            if task is None or task.terminal:
                await db.zrem(leases, task_id)  # stale: that task never changes again
                continue
            failed = task.evolve(state=TaskState.FAILED, finished_at=utcnow(), error=dict(WORKER_LOST))
            if await self.fail_lapsed(failed) is not None:
                logger.warning("task %s failed: its worker stopped renewing its lease", task_id)
