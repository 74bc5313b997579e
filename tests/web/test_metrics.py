"""``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import pytest
from _support import HubFactory, LiveServer, collect, task_events
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_tasks_streams_events_and_rejections(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(metrics=True, progress_interval=0, coalesce_after=0)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        ok = (
            await http.post("/tasks", json={"name": "count", "params": {"n": 20, "interval": 0.001}})
        ).json()
        bad = (await http.post("/tasks", json={"name": "fail"})).json()
        slow = (await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
        for task in (ok, bad):
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            assert task_events(events)[-1].event in ("task.succeeded", "task.failed")
        assert (await http.delete(f"/tasks/{slow['id']}")).status_code == 202
        assert (await http.get("/tasks/nope")).status_code == 404
        assert (await http.post("/tasks", json={"name": 1})).status_code == 422
        # A resync sends one reset; a replay far behind coalesces the progress events.
        _, resynced = await collect(http, f"/tasks/{ok['id']}/events?last_event_id=bogus")
        assert [e.event for e in resynced if e.event] == ["reset", "task.succeeded"]
        _, replay = await collect(
            http, f"/events?last_event_id={cursor}", until=lambda e: e.event == "task.cancelled"
        )
        assert not [e for e in replay if e.event == "task.progress"]
        with anyio.fail_after(5):
            while hub.open_streams:
                await anyio.sleep(0.02)
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("sse_tasks_tasks_total", (("state", "queued"),))] == 3
    assert got[("sse_tasks_tasks_total", (("state", "running"),))] == 3
    assert got[("sse_tasks_tasks_total", (("state", "succeeded"),))] == 1
    assert got[("sse_tasks_tasks_total", (("state", "failed"),))] == 1
    assert got[("sse_tasks_tasks_total", (("state", "cancelled"),))] == 1
    assert got[("sse_tasks_task_duration_seconds_count", (("name", "count"), ("state", "succeeded")))] == 1
    assert got[("sse_tasks_task_duration_seconds_sum", (("name", "count"), ("state", "succeeded")))] > 0
    assert got[("sse_tasks_task_duration_seconds_count", (("name", "sleep"), ("state", "cancelled")))] == 1
    assert got[("sse_tasks_open_streams", ())] == 0
    assert got[("sse_tasks_tasks_active", (("state", "running"),))] == 0
    progress = got[("sse_tasks_events_published_total", (("type", "task.progress"),))]
    assert progress >= 1
    assert got[("sse_tasks_progress_coalesced_total", ())] >= progress
    assert got[("sse_tasks_resets_sent_total", ())] == 1
    assert got[("sse_tasks_events_delivered_total", ())] >= 6
    assert got[("sse_tasks_rejected_requests_total", (("reason", "not_found"),))] == 1
    assert got[("sse_tasks_rejected_requests_total", (("reason", "invalid_request"),))] == 1


async def test_metrics_are_off_unless_asked_for(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 404
