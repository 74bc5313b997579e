"""A result that is not JSON, in process: the task ends ``failed`` with the encoding error's
type (the rule every executor follows), on both brokers, and its stream ends cleanly."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from _results import ODD_RESULTS, odd_message
from _support import HubFactory, ServerFactory, collect, task_events

from sse_tasks._core.models import MAX_RESULT_BYTES

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}


@pytest.mark.parametrize("kind", list(ODD_RESULTS))
async def test_a_result_that_is_not_json_fails_the_task_with_the_encoding_error(
    kind: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    make, error_type = ODD_RESULTS[kind]
    hub = make_hub()

    @hub.task(name="odd")
    def odd() -> Any:
        return make()

    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        posted = await http.post("/tasks", json={"name": "odd"})
        assert posted.status_code == 202, posted.text
        task_id = posted.json()["id"]
        with anyio.fail_after(30):
            response, events = await collect(http, f"/tasks/{task_id}/events")  # to its end
        assert response.status_code == 200
        snapshots = task_events(events)
        assert events[-1].event == "task.failed", [e.event for e in events]
        assert [e.event for e in snapshots if e.event in TERMINAL] == ["task.failed"]
        final = snapshots[-1].json()
        assert final["error"]["type"] == error_type, final["error"]
        message = final["error"]["message"]
        assert message.startswith(odd_message(kind)), message
        assert final["result"] is None
        assert (await http.get(f"/tasks/{task_id}")).json() == final
        done = await http.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(events[-1].id)})
        assert done.status_code == 204
        # The hub goes on: the next task runs and streams as usual.
        after = await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
        with anyio.fail_after(30):
            _, later = await collect(http, f"/tasks/{after.json()['id']}/events")
        assert task_events(later)[-1].event == "task.succeeded"


async def test_a_result_of_the_largest_size_allowed_is_kept_whole(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    hub = make_hub()
    largest = "x" * (MAX_RESULT_BYTES - 2)  # with its quotes, exactly the bound

    @hub.task(name="large")
    def large() -> str:
        return largest

    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task_id = (await http.post("/tasks", json={"name": "large"})).json()["id"]
        with anyio.fail_after(30):
            _, events = await collect(http, f"/tasks/{task_id}/events")
        final = task_events(events)[-1].json()
        assert (final["state"], final["result"]) == ("succeeded", largest)
