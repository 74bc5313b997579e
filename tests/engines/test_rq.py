"""What the engine contract cannot express for RQ: progress from ``job.meta`` (in
celery-progress's keys or in ours, seen while the job runs), a
``Retry(max=…)`` seen as ``queued`` again, and a running job that never checks, stopped by
``send_stop_job_command`` (its work horse killed after the grace) while the worker lives on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _engines import group

rq = pytest.importorskip("rq", reason="rq is not installed (pip install -e '.[test]')")

from rq_tasks import flaky, meta_fraction, meta_steps, sleeper  # noqa: E402
from test_engine_contract import WAIT, Events, post  # noqa: E402

from sse_tasks import TaskHub  # noqa: E402
from sse_tasks.rq import RQEngine  # noqa: E402

pytestmark = [pytest.mark.anyio, group("rq")]  # shares the rq workers


@pytest.fixture
def queue(rq_workers: dict[str, Any], redis_db: int) -> Iterator[Any]:
    connection = redis.Redis.from_url(rq_workers["url"])
    yield rq.Queue(rq_workers["queue"], connection=connection)
    connection.close()


async def follow(live_server: Any, queue: Any, url: str, **engine: Any) -> Any:
    import httpx

    functions: list[Callable[..., Any]] = [meta_steps, meta_fraction, flaky, sleeper]
    hub = TaskHub(url, executor=RQEngine(queue, functions, **engine), heartbeat=0.5)
    server = live_server(hub)
    return httpx.AsyncClient(base_url=server.url, timeout=WAIT)


async def test_job_meta_progress_retries_and_a_stop(
    live_server: Any, queue: Any, redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/0"
    async with await follow(live_server, queue, url, retry=rq.Retry(max=1)) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        params = {"last_event_id": cursor}
        async with http.stream("GET", "/events", params=params) as response:
            events = Events(http, response)
            stepped = await post(http, "meta_steps", n=3)
            retried = await post(http, "flaky", marker=str(tmp_path / "flaky"))
            final = await events.end(stepped)
            progress = [(e.json()["progress"], e.json()["message"]) for e in events.by_task[stepped][2:-1]]
            assert progress and progress == sorted(progress) and progress[0][1].startswith("step ")
            assert final.json()["result"] == 3 and final.json()["message"] == "step 3 of 3"

            final = await events.end(retried)
            retries = ["queued", "running", "queued", "running", "succeeded"]
            assert events.types(retried) == retries, final.data
            assert "RuntimeError" in events.by_task[retried][2].json()["message"]
            assert final.json()["result"] == "second attempt"

            stuck = await post(http, "sleeper", seconds=60)
            await events.state(stuck, "task.running")
            assert (await http.delete(f"/tasks/{stuck}")).status_code == 202
            await events.end(stuck)
            assert events.types(stuck) == ["queued", "running", "cancelled"]
            job = rq.job.Job.fetch(stuck, connection=queue.connection)
            await _until(lambda: job.get_status(refresh=True) == rq.job.JobStatus.STOPPED)
            again = await post(http, "meta_steps", n=1, interval=0)  # the workers live on
            assert (await events.end(again)).json()["result"] == 1


async def test_job_meta_in_our_keys_shows_while_the_job_runs(
    live_server: Any, queue: Any, redis_url: str, tmp_path: Path
) -> None:
    """``job.meta`` with ``progress`` (a fraction) and ``message``, saved by ``save_meta()``,
    is the running task's progress and message (in a ``task.progress`` event and in ``GET``)
    before the job returns; the job then succeeds."""
    url = redis_url.rsplit("/", 1)[0] + "/0"
    gate = tmp_path / "gate"
    async with await follow(live_server, queue, url) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        async with http.stream("GET", "/events", params={"last_event_id": cursor}) as response:
            events = Events(http, response)
            task_id = await post(http, "meta_fraction", gate=str(gate), fraction=0.4, message="reading rows")
            reported = await events.until(
                task_id, lambda e: e.event == "task.progress" and e.json()["progress"] == 0.4
            )
            assert reported.json()["state"] == "running" and reported.json()["message"] == "reading rows"
            snapshot = (await http.get(f"/tasks/{task_id}")).json()
            assert (snapshot["state"], snapshot["progress"], snapshot["message"]) == (
                "running",
                0.4,
                "reading rows",
            )
            gate.write_text("open")
            final = await events.end(task_id)
            assert events.types(task_id)[-1] == "succeeded", final.data
            assert final.json()["result"] == "read" and final.json()["progress"] == 1.0


async def _until(condition: Any) -> None:
    import anyio

    with anyio.fail_after(WAIT):
        while not condition():
            await anyio.sleep(0.05)


def test_the_queue_subclass_stores_queued_at_once(
    rq_workers: dict[str, Any], redis_url: str, redis_db: int
) -> None:
    import time

    from sse_tasks import TaskState
    from sse_tasks.brokers.redis import RedisBroker
    from sse_tasks.engines import SyncWriter
    from sse_tasks.rq import Queue

    hub_url = redis_url.rsplit("/", 1)[0] + "/0"
    connection = redis.Redis.from_url(rq_workers["url"])
    reader = SyncWriter(RedisBroker(hub_url))
    try:
        idle = Queue("nobody-listens", connection=connection, hub_url=hub_url)
        waiting = idle.enqueue(meta_steps, n=1, interval=0, meta={"sse_tasks_tags": ["user:42"]})
        stored = reader.get(waiting.id)  # no worker took it: the queue stored it
        assert stored is not None and stored.state == TaskState.QUEUED and stored.name == "meta_steps"
        assert stored.tags == ("user:42",)
        waiting.cancel()

        served = Queue(rq_workers["queue"], connection=connection, hub_url=hub_url)
        job = served.enqueue(meta_steps, n=1, interval=0)
        assert reader.get(job.id) is not None
        deadline = time.monotonic() + WAIT
        while (task := reader.get(job.id)) is None or task.state != TaskState.SUCCEEDED:
            assert time.monotonic() < deadline, task
            time.sleep(0.02)
        assert task.result == 1 and task.progress == 1.0
    finally:
        idle.writer.close()
        served.writer.close()
        reader.close()
        connection.close()


def test_a_stopped_worker_waits_for_its_pub_sub_thread_a_second_at_most(redis_url: str) -> None:
    """The thread may be waiting (RQ: up to 60 s) for a subscription when the worker stops;
    RQ waits for it a second, and so does the hook's worker with redis-py 8.2's ``stop()``."""
    import threading
    import time

    from sse_tasks.rq import Worker

    class Hooked(Worker):
        hub_url = redis_url

    connection = redis.Redis.from_url(redis_url)
    worker = Hooked([rq.Queue("idle", connection=connection)], connection=connection)
    try:
        worker.subscribe()
        # The thread reads the end of this subscription and goes on to wait for another.
        worker.pubsub.unsubscribe()
        deadline = time.monotonic() + 10
        while worker.pubsub.subscribed:
            assert time.monotonic() < deadline, "the subscription never ended"
            time.sleep(0.01)
        stopper = threading.Thread(target=worker.unsubscribe, daemon=True)
        started = time.monotonic()
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "unsubscribe() waited for the thread's whole wait"
        assert time.monotonic() - started < 5
    finally:
        worker.writer.close()
        connection.close()


def test_a_job_meta_anyone_wrote_cannot_stop_the_worker(rq_workers: dict[str, Any], redis_url: str) -> None:
    """The hook's own meta key, written by other code with a lone surrogate, a huge name
    and no time: the job is reported with what can be kept, and the worker goes on."""
    import time

    from sse_tasks import TaskState
    from sse_tasks.brokers.redis import RedisBroker
    from sse_tasks.engines import SyncWriter

    connection = redis.Redis.from_url(rq_workers["url"])
    reader = SyncWriter(RedisBroker(redis_url.rsplit("/", 1)[0] + "/0"))
    try:
        queue = rq.Queue(rq_workers["queue"], connection=connection)
        sent = {"name": "a\ud800b" + "c" * 10_000, "owner": "o\udfff", "created_at": "not a time" * 10}
        jobs = [queue.enqueue(meta_steps, n=1, interval=0, meta={"sse_tasks": sent}) for _ in range(2)]
        deadline = time.monotonic() + WAIT
        for job in jobs:
            while (task := reader.get(job.id)) is None or task.state != TaskState.SUCCEEDED:
                assert time.monotonic() < deadline, task
                time.sleep(0.02)
            assert task.name.startswith("a\ufffdbc") and len(task.name) == 4096 and task.owner == "o\ufffd"
            assert task.created_at != sent["created_at"]
    finally:
        reader.close()
        connection.close()


async def test_jobs_report_through_a_partitioned_broker(
    live_server: Any, rq_workers: dict[str, Any], redis_url: str, redis_db: int
) -> None:
    """A forking worker lends its horse a connection of each partition's: on a broker of
    two partitions every job runs and streams to its end, in either partition."""
    from rq_workers import start_rq_worker

    from sse_tasks.brokers.redis import RedisBroker

    hub_url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}?partitions=2"
    partitions = RedisBroker(hub_url)  # (never started: which partition a task is in)
    connection = redis.Redis.from_url(rq_workers["url"])
    own = rq.Queue(f"partitioned-{redis_db}", connection=connection)
    worker = start_rq_worker(rq_workers["url"], hub_url, own.name)
    try:
        async with await follow(live_server, own, hub_url) as http:
            cursor = (await http.get("/tasks")).json()["cursor"]
            async with http.stream("GET", "/events", params={"last_event_id": cursor}) as response:
                events = Events(http, response)
                posted: list[str] = []
                while len({partitions.partition_index(task_id) for task_id in posted}) < 2:
                    assert len(posted) < 30, "every task in one partition"
                    posted.append(await post(http, "meta_steps", n=2, interval=0))
                for task_id in posted:
                    final = await events.end(task_id)
                    assert events.types(task_id)[0] == "queued" and final.json()["result"] == 2
    finally:
        worker.stop()
        connection.close()
