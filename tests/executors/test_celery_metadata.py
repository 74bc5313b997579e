"""Metadata and tags through Celery: the context's metadata API and ``update_state``'s other
keys on a real worker; tags from the hub's submit and from ``apply_async(headers=…)``."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httpx
import pytest
from _support import collect, task_events, wait_for

from sse_tasks import Task
from sse_tasks.brokers.redis import RedisBroker

pytest.importorskip("celery")

pytestmark = pytest.mark.anyio


async def test_metadata_from_the_context_and_update_state(
    tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker("threads")
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        posted = await http.post("/tasks", json={"name": "annotate", "tags": ["user:42", "celery"]})
        assert posted.status_code == 202, posted.text
        task_id = posted.json()["id"]
        assert posted.json()["tags"] == ["user:42", "celery"]
        response, events = await collect(
            http, f"/tasks/{task_id}/events", until=lambda e: e.event == "task.succeeded"
        )
        assert response.status_code == 200
        found = task_events(events)
        final = found[-1].json()
        assert found[-1].event == "task.succeeded", final
        assert final["result"] == ["nan", "big", "surrogate", "update_state"]
        assert final["metadata"] == {"step": 2, "note": "<script>x</script>", "rows": 7}
        assert final["tags"] == ["user:42", "celery"] and final["message"] == "half"
        listed = (await http.get("/tasks", params={"tag": "user:42"})).json()["tasks"]
        assert [t["id"] for t in listed] == [task_id]


async def test_tags_in_the_message_header_of_a_task_sent_by_celery(
    tasks_app: ModuleType, shared_celery_worker: Any, celery_urls: dict[str, str], celery_db: None
) -> None:
    shared_celery_worker("threads")
    tagged = tasks_app.add.apply_async(args=(1, 2), headers={"sse_tasks_tags": ["user:7", "batch/1"]}).id
    refused = tasks_app.add.apply_async(args=(1, 2), headers={"sse_tasks_tags": ["no spaces"]}).id
    broker = RedisBroker(celery_urls["SSE_TASKS_BROKER"])
    await broker.start(lambda event: None)
    try:
        for task_id, tags in ((tagged, ("user:7", "batch/1")), (refused, ())):

            async def done(task_id: str = task_id) -> Task | None:
                task = await broker.get(task_id)
                return task if task is not None and task.terminal else None

            task = await wait_for(done, 30)
            assert task.tags == tags and task.result == 3
    finally:
        await broker.close()
