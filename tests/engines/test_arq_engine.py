"""What the engine contract cannot express about arq: a burst of progress from a hundred
concurrent jobs in one worker is coalesced per job and never blocks the worker's loop."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from _support import sse_events

from sse_tasks import TaskHub

pytest.importorskip("arq")
pytestmark = pytest.mark.anyio

JOBS = 100
REPORTS = 200  # per job, reported without awaiting: a burst either way


async def test_a_burst_of_progress_from_100_jobs_is_coalesced(
    arq_urls: dict[str, str], redis_db: int, live_server: Any
) -> None:
    from arq_workers import start_arq_worker

    queue = "arq:burst"
    worker = start_arq_worker({**arq_urls, "ARQ_TEST_QUEUE": queue, "ARQ_TEST_MAX_JOBS": str(JOBS)})
    try:
        server = live_server(TaskHub(arq_urls["SSE_TASKS_BROKER"], heartbeat=0.5))
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            cursor = (await http.get("/tasks")).json()["cursor"]
            script = (
                "import asyncio, sys\n"
                "from arq.connections import RedisSettings, create_pool\n"
                "async def main():\n"
                "    pool = await create_pool(RedisSettings.from_dsn(sys.argv[1]))\n"
                f"    for _ in range({JOBS}):\n"
                f"        job = await pool.enqueue_job('burst', reports={REPORTS}, _queue_name=sys.argv[2])\n"
                "        print(job.job_id)\n"
                "asyncio.run(main())\n"
            )
            args = [sys.executable, "-W", "ignore", "-c", script, arq_urls["ARQ_REDIS_URL"], queue]
            done = await anyio.run_process(args, check=True)
            ids = set(done.stdout.decode().split())
            assert len(ids) == JOBS
            progress: Counter[str] = Counter()
            finals: dict[str, dict[str, Any]] = {}
            with anyio.fail_after(60):
                params = {"last_event_id": cursor}
                async with http.stream("GET", "/events", params=params) as response:
                    async for event in sse_events(response):
                        if not (event.event or "").startswith("task."):
                            continue
                        task = json.loads(event.data)
                        if event.event == "task.progress":
                            progress[task["id"]] += 1
                        elif event.event in ("task.succeeded", "task.failed", "task.cancelled"):
                            finals[task["id"]] = task
                            if ids <= set(finals):
                                break
        assert {task["state"] for task in finals.values()} == {"succeeded"}
        assert all(task["progress"] == 1.0 and task["result"] == REPORTS for task in finals.values())
        # 20,000 reports; each job's burst comes out as a handful of writes at most.
        assert sum(progress.values()) <= JOBS * 5, progress.most_common(3)
    finally:
        worker.stop()
