"""``identify`` may be async: its answer names the caller for the hook and the task's owner."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from sse_tasks import TaskHub, owner_only

pytestmark = pytest.mark.anyio


async def test_an_async_identify_owns_and_sees_its_tasks() -> None:
    calls: list[str] = []

    async def identify(request: Request) -> str | None:
        calls.append(request.url.path)
        return request.headers.get("x-user")

    hub = TaskHub("memory://", identify=identify, authorize=owner_only)

    @hub.task
    def nothing() -> None:
        return None

    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.post("/tasks", json={"name": "nothing"}, headers={"x-user": "ann"})
            assert created.status_code == 202, created.text
            task_id = created.json()["id"]
            assert (await hub.get(task_id)).owner == "ann"
            assert (await client.get(f"/tasks/{task_id}", headers={"x-user": "ann"})).status_code == 200
            assert (await client.get(f"/tasks/{task_id}", headers={"x-user": "bob"})).status_code == 404
            assert (await client.post("/tasks", json={"name": "nothing"})).status_code == 403
    assert calls and all(path.startswith("/tasks") for path in calls)
