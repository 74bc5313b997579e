"""Task output: ordered, replayed to per-task streams, resumable exactly, bounded, untrusted."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx
import pytest
from _support import HubFactory, ServerFactory, SSEEvent, collect, sse_events, submit, task_events

from sse_tasks import TaskContext
from sse_tasks.demo import generated_text, word

pytestmark = pytest.mark.anyio


def outputs(events: list[SSEEvent]) -> list[dict[str, Any]]:
    return [e.json() for e in events if e.event == "task.output"]


def words_of(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["text"] for c in chunks if c["kind"] == "output"]


@pytest.fixture
async def http(make_hub: HubFactory, live_server: ServerFactory) -> Any:
    server = live_server(make_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def test_a_per_task_stream_carries_output_in_order_then_the_end(http: httpx.AsyncClient) -> None:
    task = await submit(http, "generate", words=30, delay=0)
    _, events = await collect(http, f"/tasks/{task['id']}/events")
    chunks = outputs(events)
    assert [c["seq"] for c in chunks] == list(range(33))  # 30 words and 3 log lines, numbered together
    assert words_of(chunks) == [f"{word(i)} " for i in range(30)]
    assert [c["text"] for c in chunks if c["kind"] == "log"] == [f"{n} of 30 words" for n in (10, 20, 30)]
    assert all(c["level"] == "info" for c in chunks if c["kind"] == "log")
    final = task_events(events)[-1]
    assert final.event == "task.succeeded"
    assert final.json()["output_chunks"] == 33
    text = await http.get(f"/tasks/{task['id']}/output")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == generated_text(30)


async def test_a_reload_mid_generation_shows_every_word_once(http: httpx.AsyncClient) -> None:
    task = await submit(http, "generate", words=40, delay=0.02)
    url = f"/tasks/{task['id']}/events"
    _, first = await collect(http, url, until=lambda e: e.event == "task.output" and e.json()["seq"] >= 8)
    assert len(outputs(first)) >= 9
    _, reloaded = await collect(http, url)  # a new page: no Last-Event-ID
    chunks = outputs(reloaded)
    assert [c["seq"] for c in chunks] == list(range(44))
    assert "".join(words_of(chunks)) == generated_text(40)


async def test_resuming_inside_a_replay_sends_exactly_the_rest(http: httpx.AsyncClient) -> None:
    task = await submit(http, "generate", words=20, delay=0)
    url = f"/tasks/{task['id']}/events"
    await collect(http, url)  # the task is done
    _, replayed = await collect(http, url)
    chunks = [e for e in replayed if e.event == "task.output"]
    assert [c.json()["seq"] for c in chunks] == list(range(22))
    middle = chunks[6]
    # Of a finished task the snapshot comes last: the terminal event ends every per-task stream.
    assert replayed[-1].event == "task.succeeded"
    _, rest = await collect(http, url, headers={"Last-Event-ID": middle.id or ""})
    assert [c["seq"] for c in outputs(rest)] == list(range(7, 22))
    assert not [e for e in rest if e.event == "reset"]
    assert [e.event for e in task_events(rest)] == ["task.succeeded"]
    _, tail = await collect(http, url, headers={"Last-Event-ID": chunks[-1].id or ""})
    assert outputs(tail) == [] and [e.event for e in task_events(tail)] == ["task.succeeded"]
    final_id = task_events(replayed)[-1].id or ""
    assert (await http.get(url, headers={"Last-Event-ID": final_id})).status_code == 204


async def test_a_reconnect_with_a_live_id_misses_and_repeats_nothing(http: httpx.AsyncClient) -> None:
    task = await submit(http, "generate", words=30, delay=0.02)
    url = f"/tasks/{task['id']}/events"
    _, first = await collect(http, url, until=lambda e: e.event == "task.output" and e.json()["seq"] >= 5)
    last = first[-1]
    _, rest = await collect(http, url, headers={"Last-Event-ID": last.id or ""})
    seqs = [c["seq"] for c in outputs(first)] + [c["seq"] for c in outputs(rest)]
    assert seqs == list(range(33))


async def test_the_global_stream_carries_output_only_when_asked(http: httpx.AsyncClient) -> None:
    async def follow(url: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        async with http.stream("GET", url) as response:
            ready.set()
            async for event in sse_events(response):
                events.append(event)
                if event.event == "task.succeeded":
                    return events
        return events

    found: dict[str, list[SSEEvent]] = {}
    async with anyio.create_task_group() as group:
        for url in ("/events", "/events?output=1"):
            ready = anyio.Event()

            async def run(url: str = url) -> None:
                found[url] = await follow(url)

            group.start_soon(run)
            await ready.wait()
        await submit(http, "generate", words=5, delay=0)
    assert outputs(found["/events"]) == []
    assert words_of(outputs(found["/events?output=1"])) == [f"{word(i)} " for i in range(5)]
    assert (await http.get("/events?output=maybe")).status_code == 422


@pytest.mark.parametrize(
    "bound",
    [{"max_output_chunks": 5}, {"max_output_bytes": len(generated_text(5).encode())}],
    ids=["chunks", "bytes"],
)
async def test_output_beyond_the_bound_is_dropped_after_one_warning(
    make_hub: HubFactory, live_server: ServerFactory, bound: dict[str, int]
) -> None:
    server = live_server(make_hub(**bound))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "generate", words=20, delay=0)
        _, events = await collect(http, f"/tasks/{task['id']}/events")
        text = (await http.get(f"/tasks/{task['id']}/output")).text
        stored = (await http.get(f"/tasks/{task['id']}")).json()
    chunks = outputs(events)
    # Five words kept, then one warning in their place of the sixth, then nothing.
    assert [c["seq"] for c in chunks] == list(range(6))
    assert [c["text"] for c in chunks[:5]] == [f"{word(i)} " for i in range(5)]
    assert chunks[-1]["kind"] == "log" and chunks[-1]["level"] == "warning"
    assert chunks[-1]["text"].startswith("output limit reached (")
    final = task_events(events)[-1]
    assert final.event == "task.succeeded" and final.json()["result"] == {"words": 20}
    assert final.json()["output_chunks"] == stored["output_chunks"] == 6
    assert text == generated_text(5)


async def test_untrusted_output_text_cannot_forge_sse_fields(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    hub = make_hub()
    nasty = "a\nb\r\nevent: task.succeeded\ndata: {}\r\x00 \ud800 id: 9\n\n"

    @hub.task
    async def noisy(ctx: TaskContext) -> None:
        ctx.output(nasty)
        ctx.log(nasty, level="error")

    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "noisy")
        _, events = await collect(http, f"/tasks/{task['id']}/events")
    kinds = [e.event for e in events if e.event]
    # Live, or (finished before the stream opened) the snapshot and then the replay.
    assert set(kinds) <= {"task.queued", "task.running", "task.output", "task.succeeded"}
    assert kinds.count("task.succeeded") == 1
    cleaned = nasty.replace("\ud800", "\ufffd")
    assert [c["text"] for c in outputs(events)] == [cleaned, cleaned]


async def test_output_is_guarded_by_tokens_like_snapshots(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    server = live_server(make_hub(tokens="a secret of at least sixteen bytes"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "generate", words=3, delay=0)
        url = f"/tasks/{task['id']}/output"
        assert (await http.get(url)).status_code == 404
        _, events = await collect(http, f"/tasks/{task['id']}/events?token={task['token']}")
        assert len(outputs(events)) == 3
        answer = await http.get(url, params={"token": task["token"]})
        assert answer.status_code == 200 and answer.text == generated_text(3)


async def test_a_follower_on_another_worker_replays_the_output(
    broker_url: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    if broker_url.startswith("memory"):
        pytest.skip("one process: memory:// has no other worker")
    worker_a = live_server(make_hub())
    worker_b = live_server(make_hub())
    async with httpx.AsyncClient(base_url=worker_a.url, timeout=30) as on_a:
        task = await submit(on_a, "generate", words=25, delay=0.01)
        _, seen_on_a = await collect(on_a, f"/tasks/{task['id']}/events")
    async with httpx.AsyncClient(base_url=worker_b.url, timeout=30) as on_b:
        _, replayed_on_b = await collect(on_b, f"/tasks/{task['id']}/events")
        text = (await on_b.get(f"/tasks/{task['id']}/output")).text
    assert [c["seq"] for c in outputs(seen_on_a)] == list(range(27))
    assert outputs(replayed_on_b) == outputs(seen_on_a)
    assert text == generated_text(25)


async def test_fast_output_reaches_many_followers_exactly_once_in_order(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    words, followers = 2_000, 10
    server = live_server(make_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        ready = 0
        opened = anyio.Event()
        task_id = ""
        seqs: list[list[int]] = [[] for _ in range(followers)]
        resets = [0] * followers

        async def follow(index: int) -> None:
            nonlocal ready
            last_id: str | None = None
            for _ in range(20):  # as EventSource does: resume where a closed stream stopped
                headers = {"last-event-id": last_id} if last_id else {}
                async with http.stream("GET", f"/tasks/{task_id}/events", headers=headers) as response:
                    if response.status_code == 204:  # resumed at or past the terminal event
                        return
                    if last_id is None:
                        ready += 1
                        if ready == followers:
                            opened.set()
                    async for event in sse_events(response):
                        last_id = event.id or last_id
                        if event.event == "reset":  # fell behind: the replay that follows is whole
                            seqs[index].clear()
                            resets[index] += 1
                        elif event.event == "task.output":
                            seqs[index].append(event.json()["seq"])
                        elif event.event == "task.succeeded":
                            return
            raise AssertionError(f"follower {index} never saw the task end")

        # The followers attach while it generates: each gets the stored part replayed and
        # the rest live, and must see every word once, in order.
        task_id = (await submit(http, "generate", words=words, delay=0))["id"]
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for index in range(followers):
                    group.start_soon(follow, index)
                await opened.wait()
        text = (await http.get(f"/tasks/{task_id}/output")).text
    expected = list(range(words + words // 10))
    for index, got in enumerate(seqs):
        pairs = enumerate(zip(got, expected, strict=False))
        wrong = next((i for i, (a, b) in pairs if a != b), min(len(got), len(expected)))
        assert got == expected, (
            f"follower {index} ({resets[index]} resets): {len(got)} chunks, first wrong at {wrong}: "
            f"{got[max(0, wrong - 3) : wrong + 3]} != {expected[max(0, wrong - 3) : wrong + 3]}"
        )
    assert text == generated_text(words)


async def test_followers_on_another_worker_mid_generation_get_every_chunk_once_in_order(
    broker_url: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    """Output written in batches on worker A: on worker B, a follower attached before the
    task and followers attached while it generates (the stored part replayed, then live)
    each see every chunk once, in order, then the end."""
    if broker_url.startswith("memory"):
        pytest.skip("one process: memory:// has no other worker")
    words, late_followers = 3_000, 3
    expected = list(range(words + words // 10))
    worker_a = live_server(make_hub())
    worker_b = live_server(make_hub())
    seqs: list[list[int]] = [[] for _ in range(late_followers + 1)]
    async with (
        httpx.AsyncClient(base_url=worker_a.url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=worker_b.url, timeout=60) as on_b,
    ):
        task_id = ""
        started = anyio.Event()

        async def follow_all(opened: anyio.Event) -> None:
            by_task: dict[str, list[int]] = {}  # (output may come before the submit's answer)
            async with on_b.stream("GET", "/events?output=1&name=generate") as response:
                opened.set()
                async for event in sse_events(response):
                    data = event.json() if event.data else {}
                    if event.event == "task.output":
                        by_task.setdefault(data["id"], []).append(data["seq"])
                    elif event.event == "task.succeeded" and data["id"] == task_id:
                        seqs[0] = by_task.get(task_id, [])
                        return

        async def follow_one(index: int) -> None:
            await started.wait()
            async with on_b.stream("GET", f"/tasks/{task_id}/events") as response:
                async for event in sse_events(response):
                    assert event.event != "reset"
                    if event.event == "task.output":
                        seqs[index].append(event.json()["seq"])
                    elif event.event == "task.succeeded":
                        return
            raise AssertionError(f"follower {index} never saw the task end")

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                opened = anyio.Event()
                group.start_soon(follow_all, opened)
                await opened.wait()
                task_id = (await submit(on_a, "generate", words=words, delay=0))["id"]
                for index in range(1, late_followers + 1):
                    group.start_soon(follow_one, index)
                while not (await on_b.get(f"/tasks/{task_id}/output")).text:
                    await anyio.sleep(0.001)  # a poll, not a wait for the stream: it has begun
                started.set()
            text = (await on_b.get(f"/tasks/{task_id}/output")).text
    for index, got in enumerate(seqs):
        assert got == expected, f"follower {index}: {len(got)} chunks"
    assert text == generated_text(words)


async def test_a_stream_of_chosen_tasks_reads_only_their_output(
    broker_url: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    """``/events?task=X&output=1`` on worker B reads X's output into B's log and not
    the output of another task running meanwhile on worker A; resumed on a third worker
    after X ended, it gets the rest of X's output exactly."""
    if broker_url.startswith("memory"):
        pytest.skip("one process: memory:// has no other worker")
    gate = threading.Event()
    hub_a, hub_b = make_hub(), make_hub()

    @hub_a.task
    async def held(ctx: TaskContext) -> None:
        await anyio.to_thread.run_sync(gate.wait, abandon_on_cancel=True)
        ctx.output("x0")
        ctx.output("x1")

    worker_a, worker_b = live_server(hub_a), live_server(hub_b)
    async with (
        httpx.AsyncClient(base_url=worker_a.url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=worker_b.url, timeout=30) as on_b,
    ):
        chosen = (await submit(on_a, "held"))["id"]
        with anyio.fail_after(60):
            async with on_b.stream("GET", f"/events?task={chosen}&output=1") as response:
                assert response.status_code == 200  # registered before the response starts
                other = (await submit(on_a, "generate", words=20, delay=0))["id"]
                _, events = await collect(on_a, f"/tasks/{other}/events")
                assert len(outputs(events)) == 22
                gate.set()
                got: list[SSEEvent] = []
                async for event in sse_events(response):
                    got.append(event)
                    if event.event == "task.succeeded":
                        break
    # Resumed after the first chunk on a worker that never read it, once the task has
    # ended: the rest comes from storage.
    first = next(e for e in got if e.event == "task.output")
    async with httpx.AsyncClient(base_url=live_server(make_hub()).url, timeout=30) as on_c:
        resume = {"last-event-id": first.id or ""}
        _, rest = await collect(on_c, f"/events?task={chosen}&output=1", headers=resume, until=_ended)
    assert [c["text"] for c in outputs(got)] == ["x0", "x1"]
    assert [(e.event, e.id) for e in rest if e.id] == [(e.event, e.id) for e in got[got.index(first) + 1 :]]
    assert {e.json()["id"] for e in got if e.data} == {chosen}
    # B's log holds every state change (the other task's end came before the chosen
    # one's) but the output of the chosen task only.
    logged = hub_b.broker.log.read(hub_b.broker.log.first)
    assert any(e.type == "task.succeeded" and e.task.id == other for e in logged)
    assert {e.task.id for e in logged if e.type == "task.output"} == {chosen}


async def test_every_tasks_output_is_followed_from_while_a_task_runs(
    broker_url: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    """``/events?output=1`` opened while a task runs (it holds a lease) reads the running
    tasks' output from then on: the reader's one connection is not asked for a second."""
    if broker_url.startswith("memory"):
        pytest.skip("memory:// has no stream reader")
    gate = threading.Event()
    hub = make_hub()

    @hub.task
    async def held(ctx: TaskContext) -> None:
        await anyio.to_thread.run_sync(gate.wait, abandon_on_cancel=True)
        ctx.output("late")

    async with httpx.AsyncClient(base_url=live_server(hub).url, timeout=30) as http:
        task_id = (await submit(http, "held"))["id"]
        await collect(http, f"/tasks/{task_id}/events", until=lambda e: e.event == "task.running")
        with anyio.fail_after(30):
            async with http.stream("GET", "/events?output=1") as response:
                assert response.status_code == 200
                gate.set()
                got = []
                async for event in sse_events(response):
                    got.append(event)
                    if event.event == "task.succeeded":
                        break
    assert [c["text"] for c in outputs(got)] == ["late"]


def _ended(event: SSEEvent) -> bool:
    return event.event == "task.succeeded"


async def test_the_authorization_hook_filters_output_like_snapshots(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    from sse_tasks import owner_only

    hub = make_hub(authorize=owner_only, identify=lambda request: request.headers.get("x-user"))
    server = live_server(hub)
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        async with http.stream("GET", "/events?output=1", headers=bob) as watching:
            assert watching.status_code == 200
            secret = await http.post(
                "/tasks", json={"name": "generate", "params": {"words": 5, "delay": 0}}, headers=alice
            )
            own = await http.post(
                "/tasks", json={"name": "generate", "params": {"words": 3, "delay": 0}}, headers=bob
            )
            seen: list[SSEEvent] = []
            async for event in sse_events(watching):
                seen.append(event)
                if event.event == "task.succeeded" and event.json()["id"] == own.json()["id"]:
                    break
        secret_id = secret.json()["id"]
        assert [c["id"] for c in outputs(seen)] == [own.json()["id"]] * 3
        assert all(e.json()["id"] != secret_id for e in seen if e.event and e.event.startswith("task."))
        refused = await http.get(f"/tasks/{secret_id}/output", headers=bob)
        assert refused.status_code == 404
        assert (await http.get(f"/tasks/{secret_id}/output", headers=alice)).text == generated_text(5)


async def test_every_tasks_output_resumed_on_another_worker_misses_nothing(
    broker_url: str, make_hub: HubFactory, live_server: ServerFactory
) -> None:
    """``/events?output=1`` read on worker A, then resumed on worker B, whose reader is
    already past the resume id (it reads another task's output for a per-task stream):
    B's first such stream still sends every chunk after the id, once, in order."""
    if broker_url.startswith("memory"):
        pytest.skip("one process: memory:// has no other worker")
    words = 400
    worker_a, worker_b = live_server(make_hub()), live_server(make_hub())
    async with (
        httpx.AsyncClient(base_url=worker_a.url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=worker_b.url, timeout=60) as on_b,
    ):
        cursor = (await on_a.get("/tasks")).json()["cursor"]  # A's stream takes it all from here
        other = (await submit(on_a, "generate", words=words, delay=0.01))["id"]
        task_id = (await submit(on_a, "generate", words=words, delay=0.01))["id"]
        seqs: list[int] = []
        with anyio.fail_after(120):
            async with on_b.stream("GET", f"/tasks/{other}/events") as followed:
                assert followed.status_code == 200
                last_id = ""
                params = {"output": "1", "last_event_id": cursor}
                async with on_a.stream("GET", "/events", params=params) as response:
                    async for event in sse_events(response):
                        last_id = event.id or last_id
                        if event.event == "task.output" and event.json()["id"] == task_id:
                            seqs.append(event.json()["seq"])
                            if len(seqs) >= 10:
                                break
                headers = {"Last-Event-ID": last_id}
                async with on_b.stream("GET", "/events?output=1", headers=headers) as response:
                    async for event in sse_events(response):
                        assert event.event != "reset"
                        data = event.json() if event.data else {}
                        if data.get("id") != task_id:
                            continue
                        if event.event == "task.output":
                            seqs.append(data["seq"])
                        elif event.event == "task.succeeded":
                            break
    assert seqs == list(range(len(seqs))), "a chunk was lost or repeated across the resume"
    assert len(seqs) == words + words // 10
