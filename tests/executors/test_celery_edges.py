"""Edges of a Celery task's life: replacing itself, and a late worker after expiry."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from _support import collect, task_events

from sse_tasks._core.models import Task, TaskState, utcnow

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_a_task_that_replaces_itself_goes_on_to_the_replacement_s_outcome(
    pool: str, tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker(pool)
    server = live_server(celery_hub())
    sent = tasks_app.replacing.delay(a=5)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        response, events = await collect(
            http, f"/tasks/{sent.id}/events", until=lambda e: e.event in TERMINAL
        )
        assert response.status_code == 200
    events = task_events(events)
    assert events[-1].event == "task.succeeded", [e.event for e in events]
    assert events[-1].json()["result"] == 15
    assert "task.cancelled" not in [e.event for e in events]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_a_task_celery_discards_before_its_sender_stored_it_still_ends_cancelled(
    pool: str, tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    from datetime import datetime, timedelta, timezone

    shared_celery_worker(pool)
    server = live_server(celery_hub())
    past = datetime.now(timezone.utc) - timedelta(seconds=60)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        tasks_app.hook.disconnect()  # a sender whose queued comes late (here: never)
        try:
            sent = tasks_app.add.apply_async((1, 2), expires=past)
        finally:
            tasks_app.hook.connect()
        with anyio.fail_after(30):
            response, events = await collect(
                http,
                f"/events?last_event_id={cursor}",
                until=lambda e: e.event in TERMINAL and sent.id in e.data,
            )
        assert response.status_code == 200
    ends = [e.json() for e in task_events(events) if e.json()["id"] == sent.id]
    assert [e["state"] for e in ends] == ["queued", "cancelled"]
    assert ends[-1]["message"] == "expired"


def test_a_late_worker_does_not_bring_back_an_expired_task(tasks_app: ModuleType, redis_db: int) -> None:

    writer = tasks_app.hook.writer
    keys = writer.broker.keys
    writer.wire.send([("ZADD", keys.expired, 1, "gone-1")])  # expired: clients are answered 410
    queued = Task(id="gone-1", name="add")
    running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
    assert writer.publish(running, "task.running", lease="add", create=queued) is None
    assert writer.get("gone-1") is None
    fresh = Task(id="fresh-1", name="add")
    stored = writer.publish(fresh.evolve(state=TaskState.RUNNING), "task.running", lease="add", create=fresh)
    assert stored is not None and writer.state("fresh-1") == "running"


def test_an_outcome_that_cannot_be_stored_leaves_the_attempt_to_end_failed(
    tasks_app: ModuleType, redis_db: int
) -> None:
    """A worker's final snapshot that cannot be encoded stores nothing, so the attempt can
    still end another way (the success handler then ends it failed, never cancelled)."""
    from sse_tasks.engines import WorkerRun

    writer = tasks_app.hook.writer
    queued = Task(id="unstorable-1", name="add")
    run = WorkerRun(
        queued,
        {},
        writer,
        progress_interval=0.1,
        check_interval=0.1,
        max_output_bytes=1000,
        max_output_chunks=10,
    )
    running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
    run.begin(running, queued, 60.0)  # `running` waits to go out with the outcome
    with pytest.raises(TypeError):
        run.finish(TaskState.SUCCEEDED, result={1, 2})
    assert writer.get(queued.id) is None
    error = {"type": "TypeError", "message": "not JSON"}
    run.finish(TaskState.FAILED, error=error)
    writer.settle()
    final = writer.get(queued.id)
    assert final is not None and final.state is TaskState.FAILED
    assert final.error == error and final.started_at == running.started_at
    run.finish(TaskState.CANCELLED)  # ended: nothing more
    writer.settle()
    after = writer.get(queued.id)
    assert after is not None and after.state is TaskState.FAILED
