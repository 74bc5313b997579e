"""The worker side of the Celery hook, against real ``celery worker`` processes and redis-server.

Each test starts its own worker(s) and follows the hub's ``/events`` stream from the
cursor of ``GET /tasks`` taken before anything is sent, so it sees every event of every
task from the first one, in the order the hub stores them. Every wait is bounded and
waits for an event on that stream (or for a file a task writes), never for a duration.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from _results import ODD_RESULTS, odd_message
from _support import SSEEvent, collect, sse_events, task_events

pytestmark = pytest.mark.anyio

POOLS = ["prefork", "threads", "solo"]
TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}
LEASE = 1.5  # seconds, for the tests in which a worker dies
WAIT = 30.0  # the bound of any wait for an event


class Events:
    """The hub's ``/events?output=1`` stream, resumed from a cursor taken before the test
    sent anything: every event of every task, recorded per task as it is read."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.by_task: dict[str, list[SSEEvent]] = {}
        self._stream: Any = None
        self._events: Any = None

    async def __aenter__(self) -> Events:
        cursor = (await self.http.get("/tasks")).json()["cursor"]
        self._stream = self.http.stream("GET", "/events", params={"output": "1", "last_event_id": cursor})
        response = await self._stream.__aenter__()
        assert response.status_code == 200
        self._events = sse_events(response).__aiter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stream.__aexit__(*exc)

    async def until(self, predicate: Callable[[SSEEvent], bool], timeout: float = WAIT) -> SSEEvent:
        """Read (and record) events until one satisfies ``predicate``; fail after ``timeout`` s."""
        try:
            with anyio.fail_after(timeout):
                while True:
                    event = await self._events.__anext__()
                    assert event.event != "reset", event.data
                    if event.event and event.event.startswith("task."):
                        self.by_task.setdefault(event.json()["id"], []).append(event)
                        if predicate(event):
                            return event
        except TimeoutError:
            seen = {task_id: self.types(task_id) for task_id in self.by_task}
            raise AssertionError(f"no awaited event within {timeout} s; seen: {seen}") from None

    async def state(self, task_id: str, event_type: str, timeout: float = WAIT) -> SSEEvent:
        """Wait for ``task_id``'s event of ``event_type``."""
        return await self.until(lambda e: e.event == event_type and e.json()["id"] == task_id, timeout)

    async def finished(self, *task_ids: str, timeout: float = WAIT) -> dict[str, SSEEvent]:
        """Wait until every one of ``task_ids`` has its terminal event; those events, by id."""
        ends = {i: end for i in task_ids if (end := self.terminal(i)) is not None}

        def done(event: SSEEvent) -> bool:
            if event.event in TERMINAL and event.json()["id"] in task_ids:
                ends[event.json()["id"]] = event
            return len(ends) == len(task_ids)

        if len(ends) < len(task_ids):
            await self.until(done, timeout)
        return ends

    def terminal(self, task_id: str) -> SSEEvent | None:
        return next((e for e in self.of(task_id) if e.event in TERMINAL), None)

    def of(self, task_id: str) -> list[SSEEvent]:
        """The task's snapshot events (``task.output`` left out)."""
        return [e for e in self.by_task.get(task_id, []) if e.event != "task.output"]

    def types(self, task_id: str) -> str:
        """The task's lifecycle as one string: ``"queued running progress succeeded"``."""
        return " ".join(str(e.event).removeprefix("task.") for e in self.of(task_id))

    def progress(self, task_id: str) -> list[tuple[float | None, str | None]]:
        return [
            (e.json()["progress"], e.json()["message"])
            for e in self.of(task_id)
            if e.event == "task.progress"
        ]

    def output(self, task_id: str) -> list[dict[str, Any]]:
        return [e.json() for e in self.by_task.get(task_id, []) if e.event == "task.output"]


async def assert_ended_with(http: httpx.AsyncClient, final: SSEEvent) -> None:
    """Nothing follows ``final``: the task's own stream gives it (same id) as its only
    snapshot, after exactly the output chunks it counts; resuming from it is 204; ``GET``
    answers the same snapshot."""
    task_id = final.json()["id"]
    response, events = await collect(http, f"/tasks/{task_id}/events")
    assert response.status_code == 200
    snapshots = task_events(events)
    assert [(e.id, e.event) for e in snapshots] == [(final.id, final.event)]
    assert snapshots[0].json() == final.json()
    chunks = [e.json()["seq"] for e in events if e.event == "task.output"]
    assert chunks == list(range(final.json()["output_chunks"]))
    assert events[-1].event == final.event
    response, _ = await collect(http, f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(final.id)})
    assert response.status_code == 204
    assert (await http.get(f"/tasks/{task_id}")).json() == final.json()


def in_order(lifecycle: str, pattern: str) -> bool:
    return re.fullmatch(pattern, lifecycle) is not None


def lease_url(celery_urls: dict[str, str]) -> str:
    return celery_urls["SSE_TASKS_BROKER"] + f"?lease={LEASE}"


# -- what a running task reports ---------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
async def test_progress_from_update_state_and_the_context_streams_rate_limited_and_output_streams(
    pool: str, tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker(pool)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        # Reports spaced wider than progress_interval (0.1 s): each one is published.
        celery_keys = tasks_app.celery_progress.delay(n=4, interval=0.15).id
        our_keys = tasks_app.ours_progress.delay().id
        context = tasks_app.steps.delay(n=3, interval=0.15).id
        # 2000 reports in a burst: rate-limited, the latest value always published.
        held = tasks_app.burst.delay(n=2000, via="update_state", quiet=True).id
        failing = tasks_app.burst.delay(n=2000, via="context", fail=True).id
        talk = tasks_app.talk.delay(words=5).id
        ends = await events.finished(celery_keys, our_keys, context, held, failing, talk)

        for task_id in (celery_keys, our_keys, context, held, talk):
            assert in_order(events.types(task_id), r"queued running (progress )*succeeded"), task_id
        assert in_order(events.types(failing), r"queued running (progress )*failed")

        # celery-progress's keys: progress = current / total, message = description.
        assert events.progress(celery_keys) == [(0.25, "1/4"), (0.5, "2/4"), (0.75, "3/4"), (1.0, "4/4")]
        assert ends[celery_keys].json()["result"] == "done"
        # Our keys in update_state's meta.
        assert events.progress(our_keys) == [(0.25, "a quarter")]
        assert ends[our_keys].json()["message"] == "a quarter"
        # Our context's progress().
        assert events.progress(context) == [
            (1 / 3, "step 1 of 3"),
            (2 / 3, "step 2 of 3"),
            (1.0, "step 3 of 3"),
        ]
        assert ends[context].json()["result"] == {"n": 3}
        for task_id in (celery_keys, our_keys, context):
            assert ends[task_id].json()["progress"] == 1.0

        last = (1.0, "report 2000 of 2000")
        for task_id in (held, failing):
            reported = events.progress(task_id)
            assert 1 <= len(reported) <= 100, len(reported)  # far fewer events than reports
            fractions = [fraction for fraction, _ in reported]
            assert fractions == sorted(fractions)
        # The task went quiet after its burst: the latest value was published all the same.
        assert events.progress(held)[-1] == last
        assert ends[held].json()["result"] == 2000
        assert ends[held].json()["message"] == last[1]
        # It ended right after its burst: the terminal snapshot carries the latest value.
        final = ends[failing].json()
        assert (final["progress"], final["message"]) == last
        assert final["error"] == {"type": "RuntimeError", "message": "after the burst"}

        # Output and log chunks, in order, numbered from 0; the text on GET .../output.
        chunks = events.output(talk)
        assert [(c["seq"], c["kind"], c["text"]) for c in chunks] == [
            *((i, "output", f"w{i} ") for i in range(5)),
            (5, "log", "done talking"),
        ]
        assert chunks[-1]["level"] == "warning"
        assert all(c["id"] == talk for c in chunks)
        assert ends[talk].json()["output_chunks"] == 6
        text = await http.get(f"/tasks/{talk}/output")
        assert text.status_code == 200
        assert text.text == "w0 w1 w2 w3 w4 "
        for final_event in ends.values():
            await assert_ended_with(http, final_event)


# -- how a task ends -------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
async def test_failure_retries_expiry_and_ignore(
    pool: str, tasks_app: ModuleType, shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker(pool)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        failed = tasks_app.fail.delay(message="it broke").id
        flaky = tasks_app.flaky.delay().id
        talks = tasks_app.flaky_talk.delay().id
        past = datetime.now(timezone.utc) - timedelta(seconds=60)
        expired = tasks_app.add.apply_async((1, 2), expires=past).id
        ignored = tasks_app.ignored.delay().id
        ends = await events.finished(failed, flaky, talks, expired, ignored)

        assert events.types(failed) == "queued running failed"
        final = ends[failed].json()
        assert final["state"] == "failed"
        assert final["error"] == {"type": "RuntimeError", "message": "it broke"}
        assert final["result"] is None

        # Each retry goes back to queued, with its number, before its next attempt runs.
        assert events.types(flaky) == "queued running queued running queued running succeeded"
        queued = [e.json() for e in events.of(flaky) if e.event == "task.queued"]
        assert [q["message"] for q in queued] == [None, "retry 1 of 2", "retry 2 of 2"]
        assert all(q["started_at"] is None and q["progress"] is None for q in queued)
        assert ends[flaky].json()["result"] == "third time"
        assert ends[flaky].json()["error"] is None

        # Output goes on across attempts: one numbering, all of it kept.
        assert events.types(talks) == "queued running queued running succeeded"
        chunks = [(c["seq"], c["text"]) for c in events.output(talks)]
        assert chunks == [(0, "attempt 0.0 "), (1, "attempt 1.0 ")]
        assert ends[talks].json()["output_chunks"] == 2
        assert (await http.get(f"/tasks/{talks}/output")).text == "attempt 0.0 attempt 1.0 "

        # Celery discarded it unrun (expired), or the task told Celery to ignore it.
        assert events.types(expired) == "queued cancelled"
        assert ends[expired].json()["message"] == "expired"
        assert events.types(ignored) == "queued running cancelled"
        assert ends[ignored].json()["message"] == "ended in Celery state IGNORED"
        for final_event in ends.values():
            await assert_ended_with(http, final_event)


async def test_a_task_raising_system_exit_ends_failed_not_cancelled(
    celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    """Celery lets ``SystemExit`` through its task (its state is none): the task failed.
    The prefork child exits; the pool starts another, which runs the next task."""
    celery_worker("prefork", concurrency=1)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        exited = (await http.post("/tasks", json={"name": "exits", "params": {"code": 3}})).json()["id"]
        final = (await events.finished(exited))[exited].json()
        assert final["state"] == "failed" and final["error"] == {"type": "SystemExit", "message": "3"}, final
        after = (await http.post("/tasks", json={"name": "add", "params": {"a": 1}})).json()["id"]
        assert (await events.finished(after))[after].json()["result"] == 2


@pytest.mark.parametrize("pool", ["prefork", "threads"])
async def test_a_result_that_is_not_json_fails_the_task_with_the_encoding_error(
    pool: str, celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    """The rule of every executor: ``failed``, ``error.type`` the encoding error's, the work
    ran; never ``cancelled`` (a result nested 1,000 deep once ended so)."""
    worker = celery_worker(pool)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        sent = {}
        for kind in ODD_RESULTS:
            posted = await http.post("/tasks", json={"name": "odd", "params": {"kind": kind}})
            assert posted.status_code == 202, posted.text
            sent[kind] = posted.json()["id"]
        ends = await events.finished(*sent.values())
        for kind, task_id in sent.items():
            assert events.types(task_id) == "queued running failed", (kind, events.types(task_id))
            final = ends[task_id].json()
            assert final["error"]["type"] == ODD_RESULTS[kind][1], (kind, final["error"])
            assert final["error"]["message"].startswith(odd_message(kind)), final["error"]
            assert final["result"] is None
            await assert_ended_with(http, ends[task_id])
    assert worker.text().count("the task ran, but its result could not be") == len(
        ODD_RESULTS
    )  # one line each


async def test_the_output_bounds_hold_for_the_task_across_its_retries(
    tasks_app: ModuleType, celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    celery_worker("threads", TASKS_APP_MAX_OUTPUT_CHUNKS="3")
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        reached_on_retry = tasks_app.flaky_talk.delay(words=2).id
        reached_first = tasks_app.flaky_talk.delay(words=4).id
        ends = await events.finished(reached_on_retry, reached_first)
        warning = "output limit reached (3 chunks or 1048576 bytes): further output is not kept"

        # Two chunks, then one of the retry's before the bound: the task says so once.
        chunks = [(c["seq"], c["text"]) for c in events.output(reached_on_retry)]
        assert chunks == [(0, "attempt 0.0 "), (1, "attempt 0.1 "), (2, "attempt 1.0 "), (3, warning)]
        # Reached by the first attempt: the retry adds nothing, not even a second warning.
        chunks = [(c["seq"], c["text"]) for c in events.output(reached_first)]
        assert chunks == [(0, "attempt 0.0 "), (1, "attempt 0.1 "), (2, "attempt 0.2 "), (3, warning)]
        for final in ends.values():
            assert final.json()["state"] == "succeeded"
            assert final.json()["output_chunks"] == 4
            await assert_ended_with(http, final)
        text = await http.get(f"/tasks/{reached_on_retry}/output")
        assert text.text == "attempt 0.0 attempt 0.1 attempt 1.0 "


# -- ordering ----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
async def test_a_finished_task_never_changes_again(
    pool: str,
    tasks_app: ModuleType,
    shared_celery_worker: Any,
    celery_hub: Any,
    live_server: Any,
    tmp_path: Path,
) -> None:
    from sse_tasks._core.models import OutputChunk, TaskState

    shared_celery_worker(pool)
    server = live_server(celery_hub())
    marker = tmp_path / "racy.done"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        added = tasks_app.add.delay(2, 3).id
        # Returns while its own thread keeps reporting progress and output.
        racy = tasks_app.racy.delay(reports=300, marker=str(marker)).id
        ends = await events.finished(added, racy)

        # Late events from a worker presumed dead, through the same blocking writer.
        writer = tasks_app.hook.writer
        stored = writer.get(added)
        assert stored is not None and stored.state is TaskState.SUCCEEDED
        running = stored.evolve(state=TaskState.RUNNING, finished_at=None, result=None)
        assert writer.publish(running, "task.running", lease="add") is None
        assert writer.publish(running.evolve(progress=0.5), "task.progress", lease="xx") is None
        failed = stored.evolve(state=TaskState.FAILED, error={"type": "Late", "message": "late"})
        assert writer.publish(failed, "task.failed", lease="xx") is None
        queued = stored.evolve(state=TaskState.QUEUED, finished_at=None, started_at=None)
        assert writer.publish(queued, "task.queued", lease="none", requeue=True) is None
        assert writer.output(OutputChunk(added, 0, "output", "late")) is None
        await assert_ended_with(http, ends[added])
        assert events.types(added) == "queued running succeeded"
        assert ends[added].json()["result"] == 5

        # The reports that lost the race to the end were dropped.
        with anyio.fail_after(WAIT):
            while not marker.exists():  # the thread is done reporting
                await anyio.sleep(0.02)
        await assert_ended_with(http, ends[racy])
        assert in_order(events.types(racy), r"queued running (progress )*succeeded")
        final = ends[racy].json()
        assert (final["result"], final["progress"]) == ("raced", 1.0)
        chunks = events.output(racy)
        assert [c["seq"] for c in chunks] == list(range(final["output_chunks"]))

        # A sender whose `queued` comes once the worker runs the task: it is refused.
        late = await anyio.to_thread.run_sync(send_held_back, tasks_app)
        assert late.state is TaskState.RUNNING  # when the sender's hook stored `queued`
        await events.finished(late.id)
        assert in_order(events.types(late.id), r"queued running (progress )*succeeded")

        # A task sent after all that: whatever had been stored for the others precedes it.
        sentinel = tasks_app.add.delay(0, 0).id
        await events.finished(sentinel)
        for task_id in (added, racy, late.id):
            assert events.by_task[task_id][-1] is events.terminal(task_id)
        await assert_ended_with(http, events.by_task[late.id][-1])


def send_held_back(tasks_app: ModuleType) -> Any:
    """``steps.delay()`` from a sender whose hook runs only once a worker runs the task (a
    slow sender losing the race to the worker); the snapshot stored when the hook ran."""
    from celery import signals

    writer = tasks_app.hook.writer
    found: list[Any] = []

    def hold_back(headers: Any = None, **_: Any) -> None:
        deadline = time.monotonic() + WAIT
        while (stored := writer.get(headers["id"])) is None or stored.state.value == "queued":
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        found.append(stored)

    tasks_app.hook.disconnect()  # receivers run in the order they connected: hold_back first
    signals.after_task_publish.connect(hold_back, weak=False, dispatch_uid="hold-back")
    tasks_app.hook.connect()
    try:
        tasks_app.steps.delay(n=5, interval=0.2)  # runs for a second
    finally:
        signals.after_task_publish.disconnect(dispatch_uid="hold-back")
    (stored,) = found
    return stored


# -- a worker that dies ----------------------------------------------------------------


async def test_a_prefork_child_killed_mid_task_leaves_it_failed_by_the_main_process(
    tasks_app: ModuleType, celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    worker = celery_worker("prefork", concurrency=1)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        task_id = tasks_app.sleepy.delay(seconds=60).id
        await events.state(task_id, "task.running")
        (child,) = worker.children()
        os.kill(child, signal.SIGKILL)
        final = (await events.finished(task_id))[task_id]
        assert events.types(task_id) == "queued running failed"
        assert final.json()["error"]["type"] == "WorkerLostError"
        await assert_ended_with(http, final)
        # The worker lives on (a new child): the next task runs.
        after = tasks_app.add.delay(1, 1).id
        assert (await events.finished(after))[after].json()["result"] == 2


@pytest.mark.parametrize("pool", POOLS)
async def test_a_worker_killed_mid_task_leaves_it_failed_once_its_lease_lapses(
    pool: str,
    tasks_app: ModuleType,
    celery_worker: Any,
    celery_hub: Any,
    celery_urls: dict[str, str],
    live_server: Any,
) -> None:
    url = lease_url(celery_urls)
    worker = celery_worker(pool, SSE_TASKS_BROKER=url)
    server = live_server(celery_hub(broker=url))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        task_id = tasks_app.sleepy.delay(seconds=60).id
        await events.state(task_id, "task.running")
        worker.kill()  # main process and pool children at once: nobody reports
        final = (await events.finished(task_id, timeout=LEASE + WAIT))[task_id]
        assert events.types(task_id) == "queued running failed"
        assert final.json()["error"]["type"] == "WorkerLost"
        await assert_ended_with(http, final)


# -- who stores the task ---------------------------------------------------------------


async def test_a_task_sent_before_any_worker_stays_queued_without_a_lease_then_runs(
    tasks_app: ModuleType,
    celery_worker: Any,
    celery_hub: Any,
    celery_urls: dict[str, str],
    live_server: Any,
) -> None:
    url = lease_url(celery_urls)
    server = live_server(celery_hub(broker=url))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        waiting = tasks_app.add.delay(1, 2).id  # no worker consumes the default queue yet
        await events.state(waiting, "task.queued")
        assert (await http.get(f"/tasks/{waiting}")).json()["state"] == "queued"
        leases = tasks_app.hook.broker.keys.leases
        assert tasks_app.hook.writer.wire.send([("ZSCORE", leases, waiting)]) == [None]  # nothing to lapse

        # A witness: a task that runs on another queue and whose worker dies is failed
        # once its lease lapses; the task that waited all along is still queued.
        witness = celery_worker("threads", TASKS_APP_QUEUE="witness", SSE_TASKS_BROKER=url)
        doomed = tasks_app.sleepy.apply_async(kwargs={"seconds": 60}, queue="witness").id
        await events.state(doomed, "task.running")
        witness.kill()
        lost = (await events.finished(doomed, timeout=LEASE + WAIT))[doomed]
        assert lost.json()["error"]["type"] == "WorkerLost"
        assert events.types(waiting) == "queued"
        assert (await http.get(f"/tasks/{waiting}")).json()["state"] == "queued"

        celery_worker("threads")  # a worker at last: it runs
        final = (await events.finished(waiting))[waiting]
        assert events.types(waiting) == "queued running succeeded"
        assert final.json()["result"] == 3
        await assert_ended_with(http, final)


PLAIN_SENDER = """
import sys
from celery import Celery

app = Celery("plain", broker=sys.argv[1])  # no sse_tasks anywhere in this process
print(app.send_task("add", kwargs={"a": 2, "b": 2}, queue=sys.argv[2]).id)
"""


@pytest.mark.parametrize("pool", POOLS)
async def test_a_task_no_hooked_sender_stored_is_stored_by_the_worker(
    pool: str,
    shared_celery_worker: Any,
    celery_hub: Any,
    celery_urls: dict[str, str],
    live_server: Any,
) -> None:
    worker = shared_celery_worker(pool)
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Events(http) as events:
        with anyio.fail_after(WAIT):
            command = [sys.executable, "-c", PLAIN_SENDER, celery_urls["CELERY_BROKER_URL"], worker.queue]
            sent = await anyio.run_process(command)
        task_id = sent.stdout.decode().strip()
        final = (await events.finished(task_id))[task_id]
        assert events.types(task_id) == "queued running succeeded"
        assert final.json()["name"] == "add"
        assert final.json()["result"] == 4
        await assert_ended_with(http, final)
