"""What the engine contract cannot express for taskiq: a burst of progress from many
async tasks at once in one worker is rate-limited and coalesced per task; taskiq's own
``ProgressTracker`` shows while the task runs; a sync task; a retry."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from _engines import group
from _support import SSEEvent, sse_events, wait_for

from sse_tasks import TaskHub

pytestmark = [pytest.mark.anyio, group("taskiq")]  # shares the taskiq workers


@pytest.fixture
def burst_env(taskiq_env: dict[str, str], redis_db: int) -> Iterator[dict[str, str]]:
    from taskiq_workers import start_taskiq_worker

    env = {**taskiq_env, "TASKIQ_QUEUE": f"burst-{secrets.token_hex(4)}"}
    worker = start_taskiq_worker(env, max_async=100)
    yield env
    worker.stop()


def _hub(env: dict[str, str]) -> TaskHub:
    import os

    from taskiq_redis import ListQueueBroker

    from sse_tasks.taskiq import TaskiqExecutor

    os.environ.update({k: v for k, v in env.items() if k != "TASKIQ_QUEUE"})
    import taskiq_tasks

    broker = ListQueueBroker(env["TASKIQ_REDIS_URL"], queue_name=env["TASKIQ_QUEUE"])
    broker.register_task(taskiq_tasks.burst.original_func, task_name="burst")
    return TaskHub(env["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker), heartbeat=0.5)


async def submit_and_follow(http: httpx.AsyncClient, body: dict[str, Any]) -> list[SSEEvent]:
    """POST ``body`` with ``/events?output=1`` already open, and that task's events to its end
    (every change from the first: the stream is open before the task exists)."""
    events: list[SSEEvent] = []
    with anyio.fail_after(30):
        async with http.stream("GET", "/events", params={"output": "1"}) as response:
            assert response.status_code == 200
            answer = await http.post("/tasks", json=body)
            assert answer.status_code == 202, answer.text
            task_id = answer.json()["id"]
            async for event in sse_events(response):
                if (event.event or "").startswith("task.") and event.json()["id"] == task_id:
                    events.append(event)
                    if event.event in ("task.succeeded", "task.failed", "task.cancelled"):
                        break
    return events


async def test_a_progress_burst_of_100_tasks_is_coalesced(
    burst_env: dict[str, str], live_server: Any
) -> None:
    server = live_server(_hub(burst_env))
    progress: dict[str, int] = {}
    ends: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        async with http.stream("GET", "/events", params={"last_event_id": cursor}) as response:
            started = time.monotonic()
            ids = set()
            for _ in range(100):
                answer = await http.post("/tasks", json={"name": "burst", "params": {"n": 2000}})
                assert answer.status_code == 202, answer.text
                ids.add(answer.json()["id"])
            with anyio.fail_after(60):
                async for event in sse_events(response):
                    if not (event.event or "").startswith("task."):
                        continue
                    body = event.json()
                    if event.event == "task.progress":
                        progress[body["id"]] = progress.get(body["id"], 0) + 1
                    elif event.event in ("task.succeeded", "task.failed"):
                        ends[body["id"]] = body
                        if ids <= ends.keys():
                            break
            elapsed = time.monotonic() - started
    assert {body["state"] for body in ends.values()} == {"succeeded"}
    assert all(body["progress"] == 1.0 and body["result"] == 2000 for body in ends.values())
    # 200,000 reports; at most one publish per task per 0.1 s (plus the first) gets out.
    assert sum(progress.values()) <= 100 * (elapsed / 0.1 + 1)
    assert max(progress.values(), default=0) <= elapsed / 0.1 + 1


async def test_a_sync_task_reports_from_the_thread_pool(
    taskiq_worker: Any, taskiq_env: dict[str, str], live_server: Any
) -> None:
    import os

    from taskiq_redis import ListQueueBroker

    from sse_tasks.taskiq import TaskiqExecutor

    os.environ.update(taskiq_env)
    import taskiq_tasks

    broker = ListQueueBroker(taskiq_env["TASKIQ_REDIS_URL"], queue_name=taskiq_env["TASKIQ_QUEUE"])
    broker.register_task(taskiq_tasks.sync_steps.original_func, task_name="sync_steps")
    server = live_server(TaskHub(taskiq_env["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker)))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        events = await submit_and_follow(http, {"name": "sync_steps", "params": {"n": 3}})
        seen = [e.event or "" for e in events]
        final = events[-1].json()
        task_id = final["id"]
        assert final["result"] == "synced" and final["message"] == "sync 3 of 3"
        assert seen.count("task.output") == 3 and "task.running" in seen
        assert (await http.get(f"/tasks/{task_id}/output")).text == "line 1\nline 2\nline 3\n"


async def test_a_retry_goes_back_to_queued_and_runs_again(
    taskiq_worker: Any, taskiq_env: dict[str, str], live_server: Any, tmp_path: Any
) -> None:
    """taskiq's retry middleware re-sends the task under its id: queued, then run again."""
    import os

    from taskiq_redis import ListQueueBroker

    from sse_tasks.taskiq import TaskiqExecutor

    os.environ.update(taskiq_env)
    import taskiq_tasks

    broker = ListQueueBroker(taskiq_env["TASKIQ_REDIS_URL"], queue_name=taskiq_env["TASKIQ_QUEUE"])
    broker.register_task(taskiq_tasks.flaky.original_func, task_name="flaky", **taskiq_tasks.flaky.labels)
    server = live_server(TaskHub(taskiq_env["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker)))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        marker = str(tmp_path / "flaky")
        events = await submit_and_follow(http, {"name": "flaky", "params": {"marker": marker}})
        states = [(e.event or "", e.json().get("message")) for e in events if e.event != "task.output"]
        final = events[-1].json()
        task_id = final["id"]
        assert states[-1][0] == "task.succeeded", (states, final["error"])
        assert [name for name, _ in states][-3:] == ["task.queued", "task.running", "task.succeeded"]
        assert ("task.queued", "retry 1 of 3") in states
        assert final["result"] == 2 and final["output_chunks"] == 2
        assert (await http.get(f"/tasks/{task_id}/output")).text == "first second"


async def test_the_progress_trackers_progress_shows_while_the_task_runs(
    taskiq_worker: Any, taskiq_env: dict[str, str], live_server: Any, tmp_path: Any
) -> None:
    """``tracker.set_progress(...)`` (celery-progress's keys) is the running task's progress
    and message, in a ``task.progress`` event and in ``GET``, before the task returns (it
    waits for a gate the test opens only then); the task then succeeds."""
    import os

    from taskiq_redis import ListQueueBroker

    from sse_tasks.taskiq import TaskiqExecutor

    os.environ.update(taskiq_env)
    import taskiq_tasks

    broker = ListQueueBroker(taskiq_env["TASKIQ_REDIS_URL"], queue_name=taskiq_env["TASKIQ_QUEUE"])
    broker.register_task(taskiq_tasks.tracked.original_func, task_name="tracked")
    server = live_server(TaskHub(taskiq_env["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker)))
    gate = tmp_path / "gate"
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        with anyio.fail_after(15):
            async with http.stream("GET", "/events") as response:
                assert response.status_code == 200
                answer = await http.post("/tasks", json={"name": "tracked", "params": {"gate": str(gate)}})
                assert answer.status_code == 202, answer.text
                task_id = answer.json()["id"]
                async for event in sse_events(response):
                    if not (event.event or "").startswith("task.") or event.json()["id"] != task_id:
                        continue
                    seen.append(event.event or "")
                    body = event.json()
                    if event.event == "task.progress" and body["progress"] == 0.25:
                        assert (body["state"], body["message"]) == ("running", "one of four")
                        snapshot = (await http.get(f"/tasks/{task_id}")).json()
                        assert (snapshot["state"], snapshot["progress"]) == ("running", 0.25)
                        assert snapshot["message"] == "one of four"
                        await anyio.Path(gate).write_text("open")
                    if event.event in ("task.succeeded", "task.failed", "task.cancelled"):
                        break
    assert seen[-1] == "task.succeeded" and body["result"] == "tracked", (seen, body)
    assert "task.progress" in seen[:-1] and gate.exists()


async def test_a_cancelled_task_stops_at_its_next_progress_tracker_report(
    taskiq_worker: Any, taskiq_env: dict[str, str], live_server: Any, tmp_path: Any
) -> None:
    """taskiq has no revoke: a ``DELETE`` stops a running task at its next report, and a
    task that reports only through taskiq's ``ProgressTracker`` reports too."""
    import os

    from taskiq_redis import ListQueueBroker

    from sse_tasks.taskiq import TaskiqExecutor

    os.environ.update(taskiq_env)
    import taskiq_tasks

    broker = ListQueueBroker(taskiq_env["TASKIQ_REDIS_URL"], queue_name=taskiq_env["TASKIQ_QUEUE"])
    broker.register_task(taskiq_tasks.tracked_steps.original_func, task_name="tracked_steps")
    server = live_server(TaskHub(taskiq_env["SSE_TASKS_BROKER"], executor=TaskiqExecutor(broker)))
    marker = anyio.Path(tmp_path / "ended")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answer = await http.post("/tasks", json={"name": "tracked_steps", "params": {"marker": str(marker)}})
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["id"]

        async def reported() -> bool:
            return bool((await http.get(f"/tasks/{task_id}")).json()["progress"])

        await wait_for(reported, timeout=30)
        assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
        await wait_for(marker.exists, timeout=30)
        outcome, step = (await marker.read_text()).split()
        assert outcome == "TaskCancelled" and int(step) < 1000, (outcome, step)
        assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "cancelled"
