"""A hub with a remote engine runs the engine's tasks on its workers and the tasks
registered on the hub itself in process."""

from __future__ import annotations

import queue
import threading
from typing import Any

import httpx
import pytest
from _support import collect, task_events
from fake import FakeEngine, Message

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio


async def test_engine_tasks_are_sent_and_the_hubs_own_run_here(
    redis_url: str, redis_db: int, live_server: Any
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    messages: queue.Queue[Message | None] = queue.Queue()
    hub = TaskHub(url, executor=FakeEngine(messages))
    ran = threading.Event()

    @hub.task
    def local(a: int) -> int:
        ran.set()
        return a * 2

    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        sent = (await http.post("/tasks", json={"name": "add", "params": {"a": 1}})).json()
        assert sent["state"] == "queued"
        assert messages.get_nowait().task.id == sent["id"]  # on the engine's queue
        here = (await http.post("/tasks", json={"name": "local", "params": {"a": 21}})).json()
        response, events = await collect(http, f"/tasks/{here['id']}/events")  # to its end
        assert response.status_code == 200
        assert [e.event for e in task_events(events)][-1] == "task.succeeded"
        assert task_events(events)[-1].json()["result"] == 42 and ran.is_set()
        assert messages.empty()  # run here, never sent
        assert (await http.get(f"/tasks/{sent['id']}")).json()["state"] == "queued"  # no worker took it
