"""The contract every engine adapter keeps, run against the fake engine and against Celery.

The fake engine (``fake.py``) is built from the public engine side alone, so passing
here shows an adapter needs nothing else. Each test follows the hub's ``/events`` stream
from a cursor taken before anything is sent; every wait is bounded and waits for an
event (or a file a task writes), never for a duration.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
import pytest
from _engines import LEASE, Engine
from _results import ODD_RESULTS, odd_message
from _support import SSEEvent, collect, sse_events, task_events, wait_for

from sse_tasks import Task, TaskHub, TaskState, owner_only
from sse_tasks.engines import Job, NotSent, RemoteEngine

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}
WAIT = 30.0


class Events:
    """The hub's ``/events?output=1`` stream from a cursor: every event, kept per task."""

    def __init__(self, http: httpx.AsyncClient, response: httpx.Response) -> None:
        self.http = http
        self.by_task: dict[str, list[SSEEvent]] = {}
        self._events = sse_events(response).__aiter__()

    async def until(self, task_id: str, done: Callable[[SSEEvent], bool], timeout: float = WAIT) -> SSEEvent:
        for event in self.by_task.get(task_id, []):
            if done(event):
                return event
        with anyio.fail_after(timeout):
            while True:
                event = await self._events.__anext__()
                if not (event.event and event.event.startswith("task.")):
                    continue
                found = event.json().get("id") or event.json().get("task_id")
                self.by_task.setdefault(found, []).append(event)
                if found == task_id and done(event):
                    return event

    async def state(self, task_id: str, event_type: str) -> SSEEvent:
        return await self.until(task_id, lambda e: e.event == event_type)

    async def end(self, task_id: str, timeout: float = WAIT) -> SSEEvent:
        return await self.until(task_id, lambda e: e.event in TERMINAL, timeout)

    def types(self, task_id: str) -> list[str]:
        return [e.event.removeprefix("task.") for e in self.by_task.get(task_id, []) if e.event]


@asynccontextmanager
async def served(
    engine: Engine, live_server: Any, **hub: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Events]]:
    server = live_server(engine.hub(**hub))
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        params = {"output": "1", "last_event_id": cursor}
        async with http.stream("GET", "/events", params=params) as response:
            assert response.status_code == 200
            yield http, Events(http, response)


async def post(http: httpx.AsyncClient, name: str, **params: Any) -> str:
    answer = await http.post("/tasks", json={"name": name, "params": params})
    assert answer.status_code == 202, answer.text
    assert answer.json()["name"] == name
    assert answer.headers["location"].endswith(f"/tasks/{answer.json()['id']}")
    return str(answer.json()["id"])


async def assert_over(http: httpx.AsyncClient, final: SSEEvent) -> None:
    """Nothing follows ``final``: its stream gives it as the only snapshot; resuming from it
    is 204; ``GET`` answers the same snapshot."""
    task_id = final.json()["id"]
    response, events = await collect(http, f"/tasks/{task_id}/events")
    assert response.status_code == 200
    assert [(e.id, e.event) for e in task_events(events)] == [(final.id, final.event)]
    response, _ = await collect(http, f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(final.id)})
    assert response.status_code == 204
    assert (await http.get(f"/tasks/{task_id}")).json() == final.json()


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)


async def test_lifecycle_from_post_and_from_the_engines_own_enqueue(engine: Engine, live_server: Any) -> None:
    async with served(engine, live_server) as (http, events):
        posted = await post(http, "add", a=2, b=3)
        final = await events.end(posted)
        assert events.types(posted) == ["queued", "running", "succeeded"]
        assert final.json()["result"] == 5 and final.json()["progress"] == 1.0
        assert final.json()["started_at"] and final.json()["finished_at"]
        await assert_over(http, final)

        sent = engine.enqueue("add", a=4, b=5)  # the engine's own enqueue: no hub involved
        final = await events.end(sent)
        assert events.types(sent) == ["queued", "running", "succeeded"]
        assert final.json()["result"] == 9 and final.json()["name"] == "add"
        await assert_over(http, final)


async def test_progress_output_and_failure(engine: Engine, live_server: Any) -> None:
    async with served(engine, live_server) as (http, events):
        stepped = await post(http, "steps", n=3, interval=0.15)
        talked = await post(http, "talk", words=3)
        failed = await post(http, "fail", message="no luck")
        final = await events.end(stepped)
        progress = [(e.json()["progress"], e.json()["message"]) for e in events.by_task[stepped][2:-1]]
        assert progress and progress == sorted(progress)  # reported, in order
        assert progress[-1] == (1.0, "step 3 of 3") or final.json()["message"] == "step 3 of 3"
        assert final.json()["result"] == {"n": 3}

        final = await events.end(talked)
        chunks = [e.json() for e in events.by_task[talked] if e.event == "task.output"]
        expected = [(0, "w0 "), (1, "w1 "), (2, "w2 "), (3, "done talking")]
        assert [(c["seq"], c["text"]) for c in chunks] == expected
        assert chunks[-1]["kind"] == "log" and chunks[-1]["level"] == "warning"
        assert final.json()["output_chunks"] == 4
        assert (await http.get(f"/tasks/{talked}/output")).text == "w0 w1 w2 "

        final = await events.end(failed)
        assert events.types(failed)[-1] == "failed"
        assert final.json()["error"] == {"type": "RuntimeError", "message": "no luck"}
        await assert_over(http, final)


#: Results every engine's own result store takes (pickle, or JSON that allows NaN) but
#: that are not JSON: each fails its task with the encoding error.
PORTABLE_ODD = ["nan", "huge_integer", "nested_300", "keys_written_alike", "too_large"]


async def test_a_result_that_is_not_json_fails_the_task_with_the_encoding_error(
    engine: Engine, live_server: Any
) -> None:
    async with served(engine, live_server) as (http, events):
        sent = {kind: await post(http, "odd", kind=kind) for kind in PORTABLE_ODD}
        for kind, task_id in sent.items():
            final = (await events.end(task_id)).json()
            assert events.types(task_id) == ["queued", "running", "failed"], kind
            assert final["error"]["type"] == ODD_RESULTS[kind][1], (kind, final["error"])
            assert final["error"]["message"].startswith(odd_message(kind)), final["error"]
            assert final["result"] is None


async def test_cancel_running_stops_a_body_that_swallows_exceptions(
    engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    """``TaskCancelled`` is a ``BaseException``: a body's ``except Exception: pass`` around
    ``check()`` does not keep it running, and the worker lives on."""
    marker = tmp_path / "stopped"
    async with served(engine, live_server) as (http, events):
        task_id = await post(http, "stubborn", seconds=60, marker=str(marker))
        await events.state(task_id, "task.running")
        deleted = await http.delete(f"/tasks/{task_id}")
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["state"] == "cancelled"
        final = await events.end(task_id)
        assert events.types(task_id) == ["queued", "running", "cancelled"]
        wait_for_file(marker)  # it stopped at its next check()
        after = await post(http, "add", a=1)
        assert (await events.end(after)).json()["result"] == 2  # the worker lives on
        await assert_over(http, final)
        assert (await http.delete(f"/tasks/{task_id}")).status_code == 409


async def test_cancel_queued_is_never_run(engine: Engine, live_server: Any, tmp_path: Path) -> None:
    markers = [tmp_path / "one", tmp_path / "two"]
    ran = tmp_path / "ran"
    async with served(engine, live_server) as (http, events):
        busy = [await post(http, "stubborn", seconds=60, marker=str(m)) for m in markers]
        for task_id in busy:  # every worker thread is taken
            await events.state(task_id, "task.running")
        waiting = await post(http, "touch", marker=str(ran))
        deleted = await http.delete(f"/tasks/{waiting}")
        assert deleted.status_code == 202 and deleted.json()["state"] == "cancelled"
        await anyio.to_thread.run_sync(engine.revoked, waiting)
        for task_id in busy:
            assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
        after = await post(http, "add", a=1)  # taken after the cancelled one
        assert (await events.end(after)).json()["result"] == 2
        assert events.types(waiting) == ["queued", "cancelled"]
        stored = (await http.get(f"/tasks/{waiting}")).json()
        assert stored["state"] == "cancelled" and stored["started_at"] is None
    assert not ran.exists()


async def test_resume_without_duplicates_or_gaps(engine: Engine, live_server: Any) -> None:
    async with served(engine, live_server) as (http, events):
        task_id = await post(http, "steps", n=6, interval=0.1)
        head: list[SSEEvent] = []
        with anyio.fail_after(WAIT):
            async with http.stream("GET", f"/tasks/{task_id}/events") as live:
                async for event in sse_events(live):
                    if event.event and event.event.startswith("task."):
                        head.append(event)
                        if len(head) == 2:
                            break  # the connection drops here
        resumed_response, resumed = await collect(
            http, f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(head[-1].id)}
        )
        assert resumed_response.status_code == 200
        final = await events.end(task_id)
        whole = [(e.id, e.event) for e in events.by_task[task_id]]
        first = whole.index((head[0].id, head[0].event))  # the stream opens with the current snapshot
        assert [(e.id, e.event) for e in head + task_events(resumed)] == whole[first:]
        assert whole[-1] == (final.id, "task.succeeded")
        await assert_over(http, final)


async def test_an_in_process_hub_hands_work_to_the_engine_in_one_call(engine: Engine) -> None:
    """What a FastAPI endpoint does with the hub in its own process: ``hub.submit`` sends
    the task to the engine's workers and the hub follows it to its end."""
    hub = engine.hub()
    async with hub:
        task = await hub.submit("add", a=2, b=3)  # queued, or further on if a worker was quick
        assert task.name == "add"

        async def ended() -> bool:
            return (await hub.get(task.id)).terminal

        await wait_for(ended, timeout=WAIT)
        done = await hub.get(task.id)
        assert (done.state, done.result) == (TaskState.SUCCEEDED, 5)


async def test_404_422_and_503_run_nothing(engine: Engine, live_server: Any) -> None:
    async with served(engine, live_server) as (http, _):
        unknown = await http.post("/tasks", json={"name": "no_such_task", "params": {}})
        assert unknown.status_code == 404, unknown.text
        for params in ({"b": 2}, {"a": 1, "c": 3}, {"a": "one"}):
            answer = await http.post("/tasks", json={"name": "add", "params": params})
            assert answer.status_code == 422, (params, answer.text)
        assert (await http.get("/tasks")).json()["tasks"] == []
    server = live_server(engine.hub(reachable=False))
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        answer = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "executor_unavailable"
        assert int(answer.headers["retry-after"]) > 0
        assert (await http.get("/tasks")).json()["tasks"] == []


class LostReply(RemoteEngine):
    """The engine, but the hub hears of the next send's success too late: it has refused
    the id and answered 503 by the time the message reaches a worker."""

    def __init__(self, engine: RemoteEngine) -> None:
        super().__init__()
        self.engine = engine
        self.name = engine.name
        self.lost: list[str] = []

    def bind(self, broker: Any) -> None:
        super().bind(broker)
        self.engine.bind(broker)

    def registrations(self) -> Any:
        return self.engine.registrations()

    async def send(self, job: Job) -> None:
        if self.lost:
            return await self.engine.send(job)
        self.lost.append(job.task.id)
        assert self.broker is not None
        await self.broker.refuse(job.task.id)  # as the hub does on a failed send, here first
        await self.engine.send(job)
        raise NotSent("the reply was lost")

    async def revoke(self, task: Task) -> None:
        await self.engine.revoke(task)

    async def aclose(self) -> None:
        await self.engine.aclose()


async def test_a_message_the_hub_answered_503_for_is_discarded_unrun(
    engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    """A 503 means the work never runs, even when the message reached the engine's queue."""
    lossy = LostReply(engine.make(True))
    server = live_server(TaskHub(engine.url, executor=lossy, heartbeat=0.5))
    refused, ran = tmp_path / "refused", tmp_path / "ran"
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        params = {"last_event_id": cursor}
        async with http.stream("GET", "/events", params=params) as response:
            events = Events(http, response)
            answer = await http.post("/tasks", json={"name": "touch", "params": {"marker": str(refused)}})
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "executor_unavailable"
            # The engine's queues are first in, first out: the next task is taken after it.
            after = await post(http, "touch", marker=str(ran))
            await events.state(after, "task.succeeded")
        assert ran.exists() and not refused.exists()
        assert (await http.get(f"/tasks/{lossy.lost[0]}")).status_code == 404
        assert [task["id"] for task in (await http.get("/tasks")).json()["tasks"]] == [after]


async def test_worker_death_fails_the_task_within_the_lease(engine: Engine, live_server: Any) -> None:
    """Even a task that holds its worker's thread (an asyncio engine's event loop) from its
    start: it is not presumed dead while it holds it for longer than a lease, and when its
    worker is killed, it ends ``failed`` within the lease (never ``queued`` for good)."""
    dying = engine.dying()
    url = f"{engine.url}?lease={LEASE}"  # the hub sweeps lapsed leases as often
    async with served(engine, live_server, url=url) as (http, events):
        held = dying.enqueue("hog", seconds=1.5 * LEASE)  # past the lease: renewed meanwhile
        assert (await events.end(held)).event == "task.succeeded"
        assert events.types(held) == ["queued", "running", "succeeded"]
        task_id = dying.enqueue("hog", seconds=60)
        await events.state(task_id, "task.running")
        dying.kill()  # nobody reports or renews any more
        killed = time.monotonic()
        final = await events.end(task_id, timeout=LEASE * 4 + WAIT)
        # The lease lapses at most LEASE after the last renewal, and a hub sweeps every
        # LEASE / 4 once it has been connected for a LEASE: two leases, plus slack for
        # a busy machine.
        assert time.monotonic() - killed < 2 * LEASE + 5
        assert events.types(task_id) == ["queued", "running", "failed"]
        assert final.json()["error"]["type"] == "WorkerLost"
        await assert_over(http, final)


async def test_a_worker_presumed_dead_cannot_change_the_task_it_lost(
    engine: Engine, live_server: Any
) -> None:
    """A worker that stops answering (paused, a partition) loses its task at the lease's
    end; when it comes back, the task's end it reports changes nothing."""
    dying = engine.dying()
    if dying.pause is None or dying.resume is None:
        pytest.skip("the fake's workers are threads of the test process")
    url = f"{engine.url}?lease={LEASE}"
    async with served(engine, live_server, url=url) as (http, events):
        lost = dying.enqueue("stubborn", seconds=2 * LEASE)
        await events.state(lost, "task.running")
        dying.pause()
        try:
            final = await events.end(lost, timeout=LEASE * 4 + WAIT)
        finally:
            dying.resume()
        assert final.json()["error"]["type"] == "WorkerLost"
        # Back, the worker ends the task and reports it (too late); its one slot then takes
        # the next task, whose end is the sign that the late report was made.
        after = dying.enqueue("add", a=1, b=2)
        await events.state(after, "task.succeeded")
        assert events.types(lost) == ["queued", "running", "failed"]
        assert (await http.get(f"/tasks/{lost}")).json() == final.json()


async def post_tagged(http: httpx.AsyncClient, tags: list[str], name: str, **params: Any) -> str:
    answer = await http.post("/tasks", json={"name": name, "params": params, "tags": tags})
    assert answer.status_code == 202, answer.text
    assert answer.json()["tags"] == tags
    return str(answer.json()["id"])


async def test_tags_and_metadata_from_post_and_the_engines_own_enqueue(
    engine: Engine, live_server: Any
) -> None:
    """Tags given at ``POST /tasks`` and on the engine's own enqueue path ride the engine's
    message to the worker; metadata a task sets is on its events; ``?tag=`` selects."""
    assert engine.tagged is not None
    run = f"run:{secrets.token_hex(4)}"  # this test's own tag: the hub's Redis is shared
    async with served(engine, live_server) as (http, events):
        cursor = (await http.get("/tasks")).json()["cursor"]
        posted = await post_tagged(http, ["user:42", run], "steps", n=3, interval=0.15, meta=True)
        own = engine.tagged(["user:42", run], "steps", n=2, meta=True)
        bad = engine.tagged(["not a tag"], "add", a=1)  # dropped, the task still runs
        untagged = await post(http, "add", a=2)

        final = await events.end(posted)
        assert final.json()["tags"] == ["user:42", run]
        assert final.json()["metadata"] == {"done": 3, "total": 3}
        assert all(e.json()["tags"] == ["user:42", run] for e in events.by_task[posted])
        assert any(e.json()["metadata"] for e in events.by_task[posted][:-1])  # streamed as it ran
        final = await events.end(own)
        assert final.json()["tags"] == ["user:42", run] and final.json()["metadata"] == {
            "done": 2,
            "total": 2,
        }
        assert events.types(own)[0] == "queued" and all(e.json()["tags"] for e in events.by_task[own])
        final = await events.end(bad)
        assert final.json()["result"] == 2 and final.json()["tags"] == []
        await events.end(untagged)

        listed = (await http.get("/tasks", params={"tag": run})).json()["tasks"]
        assert {task["id"] for task in listed} == {posted, own}
        both = (await http.get("/tasks", params=[("tag", run), ("tag", "user:42")])).json()["tasks"]
        assert {task["id"] for task in both} == {posted, own}
        assert (await http.get("/tasks", params=[("tag", run), ("tag", "other")])).json()["tasks"] == []

        ends: set[str] = set()

        def both_ended(event: SSEEvent) -> bool:
            if event.event in TERMINAL:
                ends.add(event.json()["id"])
            return ends == {posted, own}

        with anyio.fail_after(WAIT):
            _, selected = await collect(http, f"/events?tag={run}&last_event_id={cursor}", until=both_ended)
        assert {e.json()["id"] for e in task_events(selected)} == {posted, own}


async def test_a_worker_that_stores_a_sent_job_first_keeps_its_owner_and_tags(
    engine: Engine, live_server: Any
) -> None:
    """The engine's queue takes a job before the hub stores it ``queued``, so a worker may
    store it first, from its message alone: with the owner and tags the hub sent, so the
    submitter still sees its task and nobody else does. (Sent here without the hub's
    store, which makes that race the rule.)"""
    task_id = f"sent-{secrets.token_hex(6)}"
    # Engines read a job's task and params; its registered function is the hub's concern.
    job = Job(Task(id=task_id, name="add", owner="alice", tags=("owner:test",)), cast(Any, None), {"a": 4})
    sender = engine.make(True)
    async with served(engine, live_server) as (_, events):
        try:
            await sender.send(job)
        finally:
            await sender.aclose()
        final = await events.end(task_id)
    assert final.json()["result"] == 5 and final.json()["tags"] == ["owner:test"]
    hub = engine.hub(identify=lambda request: request.headers.get("x-user"), authorize=owner_only)
    guarded = live_server(hub)
    async with httpx.AsyncClient(base_url=guarded.url, timeout=WAIT) as http:
        mine = await http.get(f"/tasks/{task_id}", headers={"x-user": "alice"})
        assert mine.status_code == 200 and mine.json()["state"] == "succeeded"
        assert (await http.get(f"/tasks/{task_id}", headers={"x-user": "bob"})).status_code == 404


async def test_the_dashboard_over_the_engine(engine: Engine, live_server: Any) -> None:
    """The page is served, and what it reads shows the engine's tasks: its first paint
    (``GET /tasks`` pages) and then ``/events`` from that page's cursor."""
    async with served(engine, live_server, dashboard=True) as (http, events):
        earlier = engine.enqueue("add", a=1, b=1)
        await events.end(earlier)
        page = await http.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="rows"' in page.text
        module = await http.get("/sse-tasks.js")  # the page's `import … from "./sse-tasks.js"`
        assert module.status_code == 200 and "followTasks" in module.text

        first = (await http.get("/tasks", params={"limit": 1000})).json()
        assert [t["state"] for t in first["tasks"] if t["id"] == earlier] == ["succeeded"]
        older = await http.get("/tasks", params={"limit": 1000, "before": earlier})  # "Load older"
        assert older.status_code == 200 and earlier not in {t["id"] for t in older.json()["tasks"]}

        later = engine.enqueue("add", a=2, b=2)
        with anyio.fail_after(WAIT):
            _, live = await collect(
                http,
                f"/events?last_event_id={first['cursor']}",
                until=lambda e: e.event in TERMINAL and e.json()["id"] == later,
            )
        assert [e.event for e in task_events(live) if e.json()["id"] == later][-1] == "task.succeeded"
        assert earlier not in {e.json()["id"] for e in task_events(live)}  # after the first paint


@pytest.mark.parametrize("engine", ["celery"], indirect=True)
def test_the_dashboard_in_chromium_over_a_remote_engine(engine: Engine, live_server: Any, page: Any) -> None:
    """One engine is enough for the page itself (the others share its data path, above):
    live rows and counts, a task's tags and metadata, a tag filter, cancel."""
    from _browser import expect

    server = live_server(engine.hub(dashboard=True))
    page.goto(f"{server.url}/dashboard")
    expect(page.locator("#status")).to_have_text("live", timeout=15_000)
    own = engine.tagged(["user:42"], "steps", n=2, meta=True)  # the engine's own enqueue
    answer = httpx.post(
        f"{server.url}/tasks", json={"name": "stubborn", "params": {}, "tags": ["ops"]}, timeout=WAIT
    )
    assert answer.status_code == 202, answer.text
    long = answer.json()["id"]
    expect(page.locator("#count-succeeded")).to_have_text("1", timeout=WAIT * 1000)
    expect(page.locator("#count-running")).to_have_text("1", timeout=WAIT * 1000)
    expect(page.locator("#rows .row")).to_have_count(2)
    page.locator(f'#rows .row[data-id="{own}"]').click()
    expect(page.locator("#d-tags")).to_have_text("user:42")
    expect(page.locator("#d-metadata")).to_contain_text('"done": 2')
    page.fill("#f-tag", "ops")
    page.press("#f-tag", "Enter")
    expect(page.locator("#rows .row")).to_have_count(1)
    page.locator(f'#rows .row[data-id="{long}"]').click()
    page.click("#d-cancel")
    expect(page.locator("#count-cancelled")).to_have_text("1", timeout=WAIT * 1000)
    assert httpx.get(f"{server.url}/tasks/{long}", timeout=WAIT).json()["state"] == "cancelled"
