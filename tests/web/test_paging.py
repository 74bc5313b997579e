"""``GET /tasks?before=``: paging through the retained history, on memory:// and redis://."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from _support import LiveServer

from sse_tasks import Access, TaskHub
from sse_tasks.web.auth import Decision

pytestmark = pytest.mark.anyio


async def _submit(http: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        answer = await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
        assert answer.status_code == 202
        ids.append(answer.json()["id"])
    return ids


async def test_pages_by_task_id_reach_every_task_once(http: httpx.AsyncClient) -> None:
    ids = await _submit(http, 7)
    seen: list[str] = []
    query = {"limit": "3"}
    while True:
        page = (await http.get("/tasks", params=query)).json()["tasks"]
        if not page:
            break
        assert len(page) <= 3
        seen += [task["id"] for task in page]
        query = {"limit": "3", "before": page[-1]["id"]}
    assert seen == ids[::-1]


async def test_a_created_at_cursor_and_filters_combine(http: httpx.AsyncClient) -> None:
    ids = await _submit(http, 4)
    fourth = (await http.get(f"/tasks/{ids[3]}")).json()
    older = (await http.get("/tasks", params={"before": fourth["created_at"], "name": "sleep"})).json()
    created = [task["created_at"] for task in older["tasks"]]
    assert all(c < fourth["created_at"] for c in created)
    assert ids[3] not in [task["id"] for task in older["tasks"]]
    assert set(ids[:3]) <= {task["id"] for task in older["tasks"]}
    none = (await http.get("/tasks", params={"before": ids[0], "name": "sleep"})).json()
    assert none["tasks"] == []


async def test_a_before_longer_than_any_id_is_refused(http: httpx.AsyncClient) -> None:
    await _submit(http, 1)
    assert (await http.get("/tasks", params={"before": "x" * 128})).status_code == 200
    refused = await http.get("/tasks", params={"before": "x" * 129})
    assert refused.status_code == 422 and "'before'" in refused.json()["error"]["message"]


async def test_before_respects_the_hook(
    make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(make_hub(authorize=_sleep_only))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ids = []
        for name in ["sleep", "fail"] * 3:
            answer = await http.post("/tasks", json={"name": name, "params": {}})
            ids.append(answer.json()["id"])
        page = (await http.get("/tasks", params={"before": ids[-1]})).json()["tasks"]
    assert [task["id"] for task in page] == [ids[4], ids[2], ids[0]]


def _sleep_only(access: Access) -> Decision:
    if access.action == "submit":
        return True
    return lambda task: task.name == "sleep"
