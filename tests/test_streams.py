"""The SSE streams over a real uvicorn on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from _support import LiveServer, collect, task_events

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio


async def submit(http: httpx.AsyncClient, name: str, **params: Any) -> dict[str, Any]:
    response = await http.post("/tasks", json={"name": name, "params": params})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the server exposes no event for (bounded)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def is_terminal(event: Any) -> bool:
    return event.event in ("task.succeeded", "task.failed", "task.cancelled")


async def test_task_stream_snapshot_progress_terminal_then_end(http: httpx.AsyncClient) -> None:
    task = await submit(http, "count", n=3, interval=0.05)
    response, events = await collect(http, f"/tasks/{task['id']}/events")
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert events[0].retry == 2000
    changes = task_events(events)
    # First the current snapshot, then every change, the terminal event last (stream ended).
    assert changes[0].event in ("task.queued", "task.running")
    assert changes[-1].event == "task.succeeded"
    final = changes[-1].json()
    assert final["result"] == {"count": 3}
    assert final["progress"] == 1.0
    assert final["finished_at"] is not None
    progress = [e.json()["progress"] for e in changes if e.event == "task.progress"]
    assert progress and progress == sorted(progress)  # rate-limited: some steps coalesced
    ids = [e.id for e in changes]
    assert len(set(ids)) == len(ids)
    for event in changes:
        assert event.json()["id"] == task["id"]
        assert event.json()["state"] == event.event.split(".")[1] or event.event == "task.progress"


async def test_snapshot_carries_the_last_events_id_and_type(http: httpx.AsyncClient) -> None:
    task = await submit(http, "fail", message="nope")
    _, first = await collect(http, f"/tasks/{task['id']}/events")
    terminal = task_events(first)[-1]
    assert terminal.event == "task.failed"
    # A finished task's stream is its snapshot alone, typed and numbered as its last event.
    _, again = await collect(http, f"/tasks/{task['id']}/events")
    assert [(e.id, e.event) for e in task_events(again)] == [(terminal.id, "task.failed")]
    error = terminal.json()["error"]
    assert error == {"type": "RuntimeError", "message": "nope"}


async def test_each_event_is_one_compact_json_data_line(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        task = await submit(http, "fail", message="x")
        async with http.stream("GET", f"/tasks/{task['id']}/events") as response:
            raw = (await response.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f.startswith("id:")]
    assert frames
    for frame in frames:
        lines = frame.split("\n")
        assert [line.split(":", 1)[0] for line in lines] == ["id", "event", "data"]
        data = lines[2][len("data: ") :]
        assert json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False) == data


@pytest.mark.parametrize(
    "message",
    ["line1\nline2", "a\r\nevent: task.succeeded\r\ndata: {}\r\n\r\n", "\x00nul", "id: 99\n\nretry: 1"],
)
async def test_payload_text_cannot_forge_sse_fields(http: httpx.AsyncClient, message: str) -> None:
    task = await submit(http, "fail", message=message)
    _, events = await collect(http, f"/tasks/{task['id']}/events")
    changes = task_events(events)
    assert [e.event for e in changes] == ["task.failed"] or changes[-1].event == "task.failed"
    assert all(e.event in ("task.queued", "task.running", "task.failed") for e in changes)
    assert changes[-1].json()["error"]["message"] == message
    assert all(e.retry in (None, 2000) for e in events)


async def test_resume_after_terminal_gets_204(http: httpx.AsyncClient) -> None:
    task = await submit(http, "sleep", seconds=0)
    _, events = await collect(http, f"/tasks/{task['id']}/events")
    last = task_events(events)[-1]
    assert last.event == "task.succeeded"
    response = await http.get(f"/tasks/{task['id']}/events", headers={"last-event-id": last.id})
    assert response.status_code == 204
    by_query = await http.get(f"/tasks/{task['id']}/events", params={"last_event_id": last.id})
    assert by_query.status_code == 204


async def test_task_stream_resume_sends_exactly_the_missed_events(http: httpx.AsyncClient) -> None:
    task = await submit(http, "count", n=6, interval=0.05)
    url = f"/tasks/{task['id']}/events"
    _, head = await collect(http, url, until=lambda e: e.event == "task.progress")
    _, whole = await collect(http, url, headers={"last-event-id": "bogus"})  # full resync
    resume_from = task_events(head)[-1].id
    for how in ("header", "query"):
        if how == "header":
            _, rest = await collect(http, url, headers={"last-event-id": resume_from})
        else:
            _, rest = await collect(http, url + f"?last_event_id={resume_from}")
        got = task_events(rest)
        assert got[-1].event == "task.succeeded"
        assert resume_from not in [e.id for e in got]
        assert [e.event for e in rest if e.event] == [e.event for e in got]  # no reset
    # The combination is the whole history: nothing missing, nothing twice.
    _, full = await collect(http, url + "?last_event_id=" + task_events(head)[0].id)
    assert len({e.id for e in task_events(full)}) == len(task_events(full))
    assert whole[1].event == "reset"


@pytest.mark.parametrize(
    "bad_id", ["bogus", "", "0", "-1", "abc-def", "x" * 5000, "ffffff-1", "\u00e9", "1-2-3"]
)
async def test_bad_last_event_id_resyncs_never_500(http: httpx.AsyncClient, bad_id: str) -> None:
    task = await submit(http, "sleep", seconds=0)
    _, done = await collect(http, f"/tasks/{task['id']}/events")
    params = {"last_event_id": bad_id}
    query = str(httpx.QueryParams(params))
    response, events = await collect(http, f"/tasks/{task['id']}/events?{query}")
    assert response.status_code == 200
    kinds = [e.event for e in events if e.event]
    if bad_id == "":
        assert kinds == ["task.succeeded"]  # empty means none given
    else:
        assert kinds == ["reset", "task.succeeded"]
        assert "reason" in events[1].json()
    assert task_events(events)[-1].id == task_events(done)[-1].id


async def test_global_stream_is_live_and_narrowed_by_task_and_name(
    server: LiveServer, hub: TaskHub, http: httpx.AsyncClient
) -> None:
    a = await submit(http, "sleep", seconds=30)
    b = await submit(http, "sleep", seconds=30)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as other:

        async def follow(query: str) -> list[Any]:
            _, events = await collect(other, "/events" + query, until=is_terminal)
            return task_events(events)

        async with anyio.create_task_group() as group:
            results: dict[str, list[Any]] = {}

            async def run(key: str, query: str) -> None:
                results[key] = await follow(query)

            group.start_soon(run, "a", f"?task={a['id']}")
            group.start_soon(run, "ab", f"?task={b['id']}&task={a['id']}")
            group.start_soon(run, "name", "?name=fail")
            group.start_soon(run, "all", "")
            await wait_for(lambda: hub.open_streams >= 4)
            await http.delete(f"/tasks/{b['id']}")
            await http.post("/tasks", json={"name": "fail"})
            await http.delete(f"/tasks/{a['id']}")
    assert [(e.json()["id"], e.event) for e in results["a"]] == [(a["id"], "task.cancelled")]
    assert [(e.json()["id"], e.event) for e in results["ab"]] == [(b["id"], "task.cancelled")]
    assert results["name"][-1].event == "task.failed"
    assert {e.json()["name"] for e in results["name"]} == {"fail"}
    assert results["all"][0].json()["id"] == b["id"]  # live events only, from connect on
