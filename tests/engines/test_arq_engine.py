"""What the engine contract cannot express about arq: a burst of progress from a hundred
concurrent jobs in one worker is coalesced per job and never blocks the worker's loop; a
job's ``progress()`` in a tight loop does no I/O; arq's ``Retry`` goes back to ``queued``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import httpx
import pytest
import redis.asyncio
from _engines import group
from _support import Proc, sse_events
from test_engine_contract import WAIT, Events, post

from sse_tasks import TaskHub
from sse_tasks.brokers.redis.keys import Keys

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


@pytest.fixture
async def arq_hub(
    arq_worker: Proc,
    arq_urls: dict[str, str],
    redis_db: int,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[httpx.AsyncClient, Events]]:
    """A hub sending to the shared arq worker, and its ``/events`` stream from now."""
    from sse_tasks.arq import ArqExecutor

    for key, value in arq_urls.items():
        if key != "SSE_TASKS_BROKER":
            monkeypatch.setenv(key, value)  # what arq_tasks reads as it is imported
    import arq_tasks

    hub = TaskHub(arq_urls["SSE_TASKS_BROKER"], executor=ArqExecutor(arq_tasks.WorkerSettings), heartbeat=0.5)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        async with http.stream("GET", "/events", params={"last_event_id": cursor}) as response:
            assert response.status_code == 200
            yield http, Events(http, response)


@group("arq")
async def test_a_retry_goes_back_to_queued_and_runs_again(arq_hub: tuple[httpx.AsyncClient, Events]) -> None:
    """A job that raises arq's ``Retry`` on its first try is ``queued`` again (with a retry
    message), then ``running`` again and ``succeeded`` on its second try: one task id."""
    http, events = arq_hub
    task_id = await post(http, "retried")
    final = await events.end(task_id)
    assert events.types(task_id) == ["queued", "running", "queued", "running", "succeeded"], final.data
    assert events.by_task[task_id][2].json()["message"] == "retry 1 of 4"  # arq's max_tries: 5
    assert final.json()["result"] == "try 2"
    assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "succeeded"


@group("arq")
async def test_a_cancelled_error_of_the_jobs_own_fails_it(arq_hub: tuple[httpx.AsyncClient, Events]) -> None:
    """A ``CancelledError`` the job's own code raised (nobody cancelled the job) is its
    failure, not a cancel; arq runs it again, and the hook leaves the finished task be."""
    if sys.version_info < (3, 11):
        pytest.skip("Python 3.10 cannot tell a task's own CancelledError from a cancel")
    http, events = arq_hub
    task_id = await post(http, "cancelled_elsewhere")
    final = (await events.end(task_id)).json()
    assert final["state"] == "failed" and final["error"]["type"] == "CancelledError", final
    after = await post(http, "add", a=1)
    assert (await events.end(after)).json()["result"] == 2  # the worker goes on


@group("arq")
async def test_progress_in_a_tight_loop_does_no_io_and_is_coalesced(
    arq_hub: tuple[httpx.AsyncClient, Events], arq_urls: dict[str, str]
) -> None:
    """2,000 ``progress()`` calls with no ``await`` between them make no socket, poll or
    sleep call (recorded in the job, see ``arq_tasks.tight``): they never block the loop.
    They also take under 2 s, a deliberately generous bound (a few milliseconds here) that
    only a blocking round trip per call would break. The hub's log gets a handful of
    ``task.progress`` events for them at most (the latest value last), not 2,000."""
    http, events = arq_hub
    task_id = await post(http, "tight", calls=2000)
    final = await events.end(task_id)
    assert final.event == "task.succeeded", final.data
    result = final.json()["result"]
    assert result["calls"] == 2000
    assert result["blocking"] == 0, result["first"]
    assert result["seconds"] < 2.0, result
    # What the workers wrote to the hub's log (the hub's own streams may coalesce too).
    async with redis.asyncio.Redis.from_url(arq_urls["SSE_TASKS_BROKER"]) as client:
        log = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(Keys("sse_tasks").events))
    mine = [fields for _, fields in log if fields[b"k"] == task_id.encode()]
    stored = [json.loads(fields[b"d"]) for fields in mine if fields[b"t"] == b"task.progress"]
    assert 1 <= len(stored) <= 3, [(p["progress"], p["message"]) for p in stored]
    assert (stored[-1]["progress"], stored[-1]["message"]) == (1.0, "2000 of 2000")
    streamed = [e for e in events.by_task[task_id] if e.event == "task.progress"]
    assert 1 <= len(streamed) <= 3 and final.json()["message"] == "2000 of 2000"
