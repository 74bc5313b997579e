"""The SSE streams over a real uvicorn on a loopback port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from _fake_backend import FakeBackend
from _support import LiveServer, SSEEvent, collect, submit, task_events, wait_for

from sse_tasks import Task, TaskContext, TaskHub, TaskState
from sse_tasks._core.log import OutputFollow
from sse_tasks.web.settings import WebSettings
from sse_tasks.web.streams import Resume, Selection, StreamPlan, global_stream

pytestmark = pytest.mark.anyio


def is_terminal(event: Any) -> bool:
    return event.event in ("task.succeeded", "task.failed", "task.cancelled")


async def test_task_stream_snapshot_progress_terminal_then_end(hub: TaskHub, http: httpx.AsyncClient) -> None:
    gate = threading.Event()

    @hub.task
    def stepped(ctx: TaskContext, n: int = 3) -> dict[str, int]:
        if not gate.wait(30):  # until the stream below has its first snapshot
            raise TimeoutError("never released")
        for i in range(1, n + 1):
            ctx.progress(i / n, f"step {i} of {n}")
            time.sleep(0.05)
        return {"count": n}

    task = await submit(http, "stepped", n=3)

    def release_after_the_snapshot(event: SSEEvent) -> bool:
        if event.event and event.event.startswith("task."):
            gate.set()
        return False

    response, events = await collect(http, f"/tasks/{task['id']}/events", until=release_after_the_snapshot)
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
        state = "running" if event.event == "task.progress" else event.event.split(".")[1]
        assert event.json()["state"] == state


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
    # The current snapshot, then each later change: no event, id or retry of the text's.
    lifecycle = ["task.queued", "task.running", "task.failed"]
    assert [e.event for e in changes] == lifecycle[-len(changes) :]
    assert all(e.json()["id"] == task["id"] for e in changes)
    assert changes[-1].json()["error"]["message"] == message
    assert [e.event for e in events if e.event] == [e.event for e in changes]
    assert [e.retry for e in events if e.retry is not None] == [2000]


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


async def test_a_resync_of_a_stream_of_chosen_tasks_sends_only_theirs(http: httpx.AsyncClient) -> None:
    chosen, other = await submit(http, "fail", message="a"), await submit(http, "fail", message="b")
    for task in (chosen, other):
        await collect(http, f"/tasks/{task['id']}/events")  # both have failed
    _, events = await collect(
        http, f"/events?task={chosen['id']}&last_event_id=bogus", until=lambda e: e.event == "task.failed"
    )
    assert [e.event for e in events if e.event] == ["reset", "task.failed"]
    assert events[-1].json()["id"] == chosen["id"]


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


async def test_global_stream_from_list_cursor_misses_nothing(hub: TaskHub, http: httpx.AsyncClient) -> None:
    before = await submit(http, "sleep", seconds=30)
    listing = (await http.get("/tasks")).json()
    # Things happen between the first paint and the subscription...
    await http.delete(f"/tasks/{before['id']}")
    failed = await submit(http, "fail")
    _, events = await collect(
        http,
        f"/events?last_event_id={listing['cursor']}",
        until=lambda e: e.event == "task.failed",
    )
    seen = [(e.json()["id"], e.event) for e in task_events(events)]
    assert (before["id"], "task.cancelled") in seen
    assert (failed["id"], "task.queued") in seen
    assert seen[-1] == (failed["id"], "task.failed")
    assert "reset" not in [e.event for e in events]


async def test_global_stream_resume_exact_in_order_no_duplicates(
    hub: TaskHub, http: httpx.AsyncClient
) -> None:
    cursor = (await http.get("/tasks")).json()["cursor"]
    ids = [(await submit(http, "fail", message=str(i)))["id"] for i in range(6)]
    everything = [
        e
        for e in task_events(
            (
                await collect(
                    http,
                    f"/events?last_event_id={cursor}",
                    until=lambda e: e.event == "task.failed" and e.json()["id"] == ids[-1],
                )
            )[1]
        )
    ]
    # Disconnect after a few events, resume from the last one seen.
    cut = everything[4].id
    _, rest = await collect(
        http,
        "/events",
        headers={"last-event-id": cut},
        until=lambda e: e.event == "task.failed" and e.json()["id"] == ids[-1],
    )
    assert [e.id for e in task_events(rest)] == [e.id for e in everything[5:]]


async def test_resume_older_than_history_resets_with_snapshots(
    make_hub: Any, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(history=8)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        old = (await http.get("/tasks")).json()["cursor"]
        tasks = [await submit(http, "fail", message=str(i)) for i in range(6)]
        last = tasks[-1]["id"]
        await collect(http, f"/tasks/{last}/events")  # wait until the last one failed
        _, events = await collect(http, f"/events?last_event_id={old}", until=lambda e: False, limit=8)
        kinds = [e.event for e in events if e.event]
        assert kinds[0] == "reset"
        snapshots = task_events(events)
        assert {e.json()["id"] for e in snapshots} == {t["id"] for t in tasks}
        assert all(e.json()["state"] == "failed" for e in snapshots)
        # Resyncing a per-task stream works the same way.
        _, single = await collect(http, f"/tasks/{tasks[0]['id']}/events?last_event_id={old}")
        assert [e.event for e in single if e.event] == ["reset", "task.failed"]


async def test_too_many_streams_is_503(make_hub: Any, live_server: Callable[..., LiveServer]) -> None:
    hub = make_hub(max_streams=2)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        async with http.stream("GET", "/events"), http.stream("GET", "/events"):
            rejected = await http.get("/events")
            assert rejected.status_code == 503
            assert rejected.json()["error"]["code"] == "too_many_streams"
            assert rejected.headers["retry-after"]
        await wait_for(lambda: hub.open_streams == 0)
        async with http.stream("GET", "/events") as again:
            assert again.status_code == 200


async def test_each_event_is_encoded_once_for_all_subscribers(
    hub: TaskHub, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_tasks._core import models as _models

    calls: list[str] = []
    real = _models.encode_frame

    def counting(event_id: str | None, event_type: str, data: Any) -> bytes:
        calls.append(event_type)
        return real(event_id, event_type, data)

    monkeypatch.setattr(_models, "encode_frame", counting)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        results: list[list[Any]] = []

        async def follow() -> None:
            _, events = await collect(http, "/events", until=lambda e: e.event == "task.failed")
            results.append(task_events(events))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(follow)
            await wait_for(lambda: hub.open_streams == 20)
            await submit(http, "fail")
    assert len(results) == 20
    assert all([e.event for e in r] == ["task.queued", "task.running", "task.failed"] for r in results)
    assert sorted(calls) == ["task.failed", "task.queued", "task.running"]


async def test_streams_are_never_compressed(make_hub: Any, live_server: Callable[..., LiveServer]) -> None:
    from starlette.middleware.gzip import GZipMiddleware

    hub = make_hub()
    server = live_server(hub, GZipMiddleware(hub.app, minimum_size=1))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "fail", message="x" * 2000)
        headers = {"accept-encoding": "gzip"}
        async with http.stream("GET", f"/tasks/{task['id']}/events", headers=headers) as response:
            body = await response.aread()
        listing = await http.get("/tasks", headers=headers)
    assert "content-encoding" not in response.headers
    assert b"event: task.failed" in body
    assert listing.headers.get("content-encoding") == "gzip"  # the middleware does work


class Tagging:
    """Pure ASGI middleware: records each request's path, tags each response."""

    def __init__(self, app: Any, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(scope["path"])

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-tagged", b"1")]}
            await send(message)

        await self.app(scope, receive, tagged)


def _embedded(hub: TaskHub, how: str, seen: list[str]) -> tuple[Any, str]:
    """An app serving ``hub`` with ``Tagging`` around it, and the prefix of the hub's paths."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    middleware = [Middleware(Tagging, seen=seen)]
    if how == "routes":  # the hub's routes in the embedder's app
        return Starlette(routes=hub.routes, middleware=middleware, lifespan=hub.lifespan), ""
    if how == "mount":  # the hub's own app mounted in the embedder's app
        app = Starlette(routes=[Mount("/jobs", hub.app)], middleware=middleware, lifespan=hub.lifespan)
        return app, "/jobs"
    own = hub.app  # the hub's own app, with middleware added to it
    own.add_middleware(Tagging, seen=seen)
    return own, ""


@pytest.mark.parametrize("how", ["routes", "mount", "added"])
async def test_middleware_around_the_hub_wraps_its_streams(
    make_hub: Any, live_server: Callable[..., LiveServer], how: str
) -> None:
    hub = make_hub()
    seen: list[str] = []
    app, prefix = _embedded(hub, how, seen)
    server = live_server(hub, app)
    async with httpx.AsyncClient(base_url=server.url + prefix, timeout=30) as http:
        task = await submit(http, "fail")
        answer, events = await collect(http, f"/tasks/{task['id']}/events")
        assert answer.headers.get("x-tagged") == "1"
        last = task_events(events)[-1]
        assert last.event == "task.failed"
        async with http.stream("GET", "/events", params={"last_event_id": last.id}) as response:
            assert response.headers.get("x-tagged") == "1"
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        head = await http.head("/events")
        assert head.headers.get("x-tagged") == "1"
    assert f"{prefix}/tasks/{task['id']}/events" in seen
    assert seen.count(f"{prefix}/events") == 2


async def test_the_hub_app_answers_around_its_streams_as_before(http: httpx.AsyncClient) -> None:
    # Requests on the stream paths that are not streams take the app's full stack.
    post = await http.post("/events")
    assert post.status_code == 405
    assert post.json()["error"]["code"] == "method_not_allowed"
    missing = await http.get("/tasks/nope/events")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    nested = await http.get("/tasks/a/b/events")
    assert nested.status_code == 404
    bad = await http.get("/events", params={"output": "maybe"})
    assert bad.status_code == 422
    head = await http.head("/events")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["cache-control"] == "no-cache"
    assert head.headers["x-accel-buffering"] == "no"


class _Following(FakeBackend):
    """Records which output each stream registers for, and which registrations it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.followed: list[str | None] = []
        self.released: list[str | None] = []

    async def follow_output(self, task: Task | None, /) -> OutputFollow:
        name = None if task is None else task.id
        self.followed.append(name)
        return OutputFollow(None, lambda: self.released.append(name))


@pytest.mark.parametrize("unfinished", [3, 21])
async def test_chosen_tasks_output_is_followed_task_by_task_or_past_twenty_all(unfinished: int) -> None:
    """``/events?task=…&output=1`` registers for each unfinished task it chose (a finished
    one's output is all stored), or, past 20 of them, for every task's output at once."""
    backend = _Following()
    running = [backend.publish(backend.add("count"), TaskState.RUNNING) for _ in range(unfinished)]
    done = backend.publish(backend.add("count"), TaskState.SUCCEEDED)
    selection = Selection(task_ids=frozenset(t.id for t in [*running, done]), output=True)
    plan = StreamPlan(backend, WebSettings(), selection, "")
    body = await global_stream(plan, Resume(backend, None))
    assert body.release is not None
    expected = sorted(t.id for t in running) if unfinished <= 20 else [None]
    assert backend.followed == expected
    body.release()
    assert backend.released == expected
