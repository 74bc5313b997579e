"""The web side of the Celery executor, against real Celery workers, redis-server and uvicorn.

Bad input is refused before anything is sent; ``DELETE`` revokes (terminating a prefork
child, or the cooperative abort on the threads and solo pools, or a discard of a task
that still waits); the stream rules, registration, tokens and the authorization hook
hold for Celery tasks exactly as for in-process ones.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from _support import SSEEvent, collect, sse_events, task_events, wait_until

from sse_tasks import Task, TaskHub, owner_only
from sse_tasks.brokers.redis import RedisBroker

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}
STREAM_TIMEOUT = 30.0


def _ends(event: SSEEvent) -> bool:
    return event.event in TERMINAL


def _pinged(event: SSEEvent) -> bool:
    return "ping" in event.comments


async def read(
    http: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None, until: Any = None
) -> tuple[httpx.Response, list[SSEEvent]]:
    """``collect`` with an overall bound (a stream kept open by pings cannot hang the test)."""
    with anyio.fail_after(STREAM_TIMEOUT):
        return await collect(http, url, headers=headers, until=until)


async def follow(url: str, task_id: str, headers: dict[str, str] | None = None) -> list[SSEEvent]:
    """The task's stream up to its terminal event."""
    async with httpx.AsyncClient(base_url=url, timeout=STREAM_TIMEOUT) as http:
        response, events = await read(http, f"/tasks/{task_id}/events", headers=headers, until=_ends)
        assert response.status_code == 200, response.text
    found = task_events(events)
    assert found and found[-1].event in TERMINAL, [e.event for e in found]
    return found


async def delete_once_running(
    url: str, task_id: str, on_running: Callable[[], None] = lambda: None
) -> tuple[httpx.Response, list[SSEEvent]]:
    """Follow the task; once it runs, ``on_running()`` and ``DELETE`` it; read on until the
    server ends the stream. Returns the DELETE's answer and the stream's task events."""
    events: list[SSEEvent] = []
    deleted: httpx.Response | None = None
    async with httpx.AsyncClient(base_url=url, timeout=STREAM_TIMEOUT) as http:
        with anyio.fail_after(STREAM_TIMEOUT):
            async with http.stream("GET", f"/tasks/{task_id}/events") as response:
                assert response.status_code == 200
                async for event in sse_events(response):
                    events.append(event)
                    # Its start, or a snapshot since (a progress report before the stream opened).
                    snapshot = (event.event or "").startswith("task.") and event.json()
                    if snapshot and snapshot.get("state") == "running" and deleted is None:
                        on_running()
                        deleted = await http.delete(f"/tasks/{task_id}")
    assert deleted is not None, f"the task never ran: {[e.event for e in events]}"
    return deleted, task_events(events)


def celery_queue_length(celery_urls: dict[str, str]) -> int:
    """Messages waiting in Celery's default queue (no worker takes them in these tests)."""
    import redis

    client = redis.Redis.from_url(celery_urls["CELERY_BROKER_URL"])
    try:
        return int(client.llen("celery"))
    finally:
        client.close()


# -- 1. bad input: nothing sent, nothing created ---------------------------------------------


async def test_unknown_name_404_and_params_that_do_not_fit_422_send_nothing(
    celery_hub: Any, live_server: Any, celery_urls: dict[str, str]
) -> None:
    server = live_server(celery_hub())  # no worker: whatever is sent stays in Celery's queue
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        unknown = await http.post("/tasks", json={"name": "no_such_task", "params": {}})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["code"] == "not_found"
        internal = await http.post("/tasks", json={"name": "celery.backend_cleanup", "params": {}})
        assert internal.status_code == 404, internal.text  # Celery's own tasks are not offered
        for params in ({"b": 2}, {"a": 1, "c": 3}, {"a": "one"}, {"a": 1.5}, {"a": 1, "b": None}):
            answer = await http.post("/tasks", json={"name": "add", "params": params})
            assert answer.status_code == 422, (params, answer.text)
            assert answer.json()["error"]["code"]
        listed = await http.get("/tasks")
        assert listed.json()["tasks"] == []
        assert celery_queue_length(celery_urls) == 0
        # The control: a fitting one is sent (and so would have been seen above).
        sent = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert sent.status_code == 202, sent.text
        assert celery_queue_length(celery_urls) == 1
        assert [t["id"] for t in (await http.get("/tasks")).json()["tasks"]] == [sent.json()["id"]]


def offline_app(port: int) -> Any:
    """A Celery app, with one task, whose broker is 127.0.0.1:``port``."""
    from celery import Celery

    dead = f"redis://127.0.0.1:{port}/0"
    # Celery prefers $CELERY_BROKER_URL (set for the test app) to `broker=`; the write URL
    # (what sends and revokes use) is taken from the app's own setting when there is one.
    offline = Celery("offline", broker=dead, broker_write_url=dead, set_as_current=False)
    assert offline.conf.broker_write_url == dead

    @offline.task(name="offline_add", shared=False)  # not on every later app
    def offline_add(a: int) -> int:  # pragma: no cover - never runs
        return a

    return offline


class SilentBroker:
    """A loopback port that accepts connections and never answers; counts the connections
    its clients open and close."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.opened = self.closed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.sock:
                        connection, _ = sock.accept()
                        selector.register(connection, selectors.EVENT_READ)
                        self.opened += 1
                    elif not sock.recv(65536):  # the client closed it (what it sent is ignored)
                        selector.unregister(sock)
                        sock.close()
                        self.closed += 1
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port nobody listens on (kept bound, so nobody else takes it): refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.mark.parametrize("broker", ["refused", "silent"])
async def test_celery_broker_unreachable_503_fast_and_nothing_created(
    broker: str, request: pytest.FixtureRequest, celery_urls: dict[str, str], redis_db: int, live_server: Any
) -> None:
    """``refused``: connections to the port fail at once (default options); ``silent``: it
    accepts and never answers, and the send gives up within ``send_timeout``, by itself."""
    from sse_tasks.celery import CeleryExecutor

    silent: SilentBroker | None = None
    if broker == "silent":
        silent = request.getfixturevalue("silent_broker")
        port, options = silent.port, {"send_timeout": 2.0}
    else:
        port, options = request.getfixturevalue("dead_port"), {}
    offline = offline_app(port)
    hub = TaskHub(celery_urls["SSE_TASKS_BROKER"], executor=CeleryExecutor(offline, **options))
    server = live_server(hub)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(2):  # and again: an earlier failure leaves nothing slow behind
                started = time.monotonic()
                answer = await http.post("/tasks", json={"name": "offline_add", "params": {"a": 1}})
                elapsed = time.monotonic() - started
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"].startswith("application/json")
                error = answer.json()["error"]
                assert error["code"] == "executor_unavailable"
                assert error["message"]
                assert int(answer.headers["retry-after"]) > 0
                assert elapsed < 3.0, f"the send took {elapsed:.1f} s to give up"
            listed = await http.get("/tasks")
            assert listed.status_code == 200
            assert listed.json()["tasks"] == []
            bad = await http.post("/tasks", json={"name": "offline_add", "params": {}})
            assert bad.status_code == 422  # bad params are still judged first
        if silent is not None:
            # No send is left hanging on the silent broker (it could deliver the task later).
            assert silent.opened
            wait_until(lambda: silent.closed == silent.opened, "the sends to close their connections", 5)
    finally:
        offline.close()


async def test_hub_broker_unreachable_503_before_anything_is_sent(
    tasks_app: ModuleType, celery_urls: dict[str, str], celery_db: None, dead_port: int, live_server: Any
) -> None:
    """The hub's own Redis down (Celery's up): refused before the message is sent, or a
    worker would run a task whose client was told 503 (and retries it)."""
    from sse_tasks.celery import CeleryExecutor

    hub = TaskHub(f"redis://127.0.0.1:{dead_port}/0", executor=CeleryExecutor(tasks_app.app))
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answer = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "broker_unavailable"
        assert int(answer.headers["retry-after"]) > 0
    assert celery_queue_length(celery_urls) == 0


# -- 2. DELETE revokes ------------------------------------------------------------------------


def _dead(pid: int) -> bool:
    """The process has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def test_delete_terminates_a_running_task_on_prefork(
    celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    worker = celery_worker("prefork", concurrency=1)
    server = live_server(celery_hub(terminate=True))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        posted = await http.post("/tasks", json={"name": "sleepy", "params": {"seconds": 60}})
        assert posted.status_code == 202, posted.text
    task_id = posted.json()["id"]
    children: list[int] = []
    record_child = lambda: children.extend(worker.children())  # noqa: E731
    deleted, events = await delete_once_running(server.url, task_id, record_child)
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["state"] == "cancelled"
    assert deleted.json()["finished_at"]
    assert events[-1].event == "task.cancelled"
    assert [e.event for e in events].count("task.cancelled") == 1
    worker.wait_for(f"Terminating {task_id}")
    assert len(children) == 1, children
    # The child that ran it is dead at once (the pool reaps and replaces it later):
    # it cannot succeed any more.
    wait_until(lambda: _dead(children[0]), "the terminated child to die", 5)
    # The worker goes on taking work, and the cancelled task stays cancelled.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        after = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert (await follow(server.url, after.json()["id"]))[-1].event == "task.succeeded"
        assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "cancelled"
        again = await http.delete(f"/tasks/{task_id}")
        assert again.status_code == 409
    assert f"sleepy[{task_id}] succeeded" not in worker.text()


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
async def test_delete_aborts_a_running_task_cooperatively(
    pool: str, tmp_path: Path, celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    """The body checks inside ``except Exception: pass``: the cancel (a ``BaseException``)
    is not swallowed, ends the task ``cancelled`` and leaves the pool alive (the solo pool
    once exited on a ``BaseException``)."""
    worker = celery_worker(pool, concurrency=1)
    server = live_server(celery_hub())  # terminate=False: a cooperative stop
    marker = tmp_path / "stopped"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        params = {"seconds": 60, "marker": str(marker)}
        posted = await http.post("/tasks", json={"name": "stubborn", "params": params})
        assert posted.status_code == 202, posted.text
    task_id = posted.json()["id"]
    deleted, events = await delete_once_running(server.url, task_id)
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["state"] == "cancelled"
    assert events[-1].event == "task.cancelled"
    # Its next check() raised inside the worker: the task saw the cancel and stopped. (The
    # file exists a moment before its text is in it.)
    wait_until(lambda: marker.exists() and marker.read_text() == "stopped", "the task to stop on its check()")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        after = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert (await follow(server.url, after.json()["id"]))[-1].event == "task.succeeded"
        assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "cancelled"
    assert f"stubborn[{task_id}] succeeded" not in worker.text()
    assert f"stubborn[{task_id}] ignored" in worker.text()  # Celery's outcome: Ignore


async def test_a_cancelled_task_stops_at_its_next_update_state(
    tmp_path: Path, celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    """A task that reports only through Celery's ``update_state`` stops there once cancelled."""
    celery_worker("threads", concurrency=1)
    server = live_server(celery_hub())  # terminate=False: a cooperative stop
    marker = tmp_path / "ended"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        params = {"marker": str(marker)}
        posted = await http.post("/tasks", json={"name": "celery_progress_steps", "params": params})
        assert posted.status_code == 202, posted.text
    task_id = posted.json()["id"]
    deleted, events = await delete_once_running(server.url, task_id)
    assert deleted.status_code == 202, deleted.text
    assert events[-1].event == "task.cancelled"
    wait_until(lambda: marker.exists() and marker.read_text(), "the task to end")
    outcome, step = marker.read_text().split()
    assert outcome == "TaskCancelled" and int(step) < 1000, (outcome, step)


@pytest.mark.parametrize("via", ["this hub", "a hub whose Celery broker is down"])
async def test_delete_of_a_waiting_task_is_discarded_by_the_worker_that_takes_it(
    via: str,
    tmp_path: Path,
    dead_port: int,
    celery_urls: dict[str, str],
    celery_worker: Any,
    celery_hub: Any,
    live_server: Any,
) -> None:
    """No worker runs when it is cancelled (so nobody hears the revoke; or it cannot even
    be sent, from another hub on the same Redis): the worker that later takes the
    message finds it stored ``cancelled`` and discards it."""
    from sse_tasks.celery import CeleryExecutor

    server = live_server(celery_hub())
    canceller = server
    if via != "this hub":
        offline = CeleryExecutor(offline_app(dead_port), send_timeout=2.0)
        canceller = live_server(TaskHub(celery_urls["SSE_TASKS_BROKER"], executor=offline))
    marker = tmp_path / "ran"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        posted = await http.post("/tasks", json={"name": "touch", "params": {"marker": str(marker)}})
        assert posted.status_code == 202, posted.text
        task_id = posted.json()["id"]
        assert posted.json()["state"] == "queued"  # no worker runs yet
        started = time.monotonic()
        deleted = await http.delete(f"{canceller.url}/tasks/{task_id}")
        assert deleted.status_code == 202, deleted.text
        assert deleted.json()["state"] == "cancelled"
        assert time.monotonic() - started < 3.0
        events = await follow(server.url, task_id)
        assert [e.event for e in events] == ["task.cancelled"]
        worker = celery_worker("solo", concurrency=1)  # takes the waiting message now
        worker.wait_for(f"Discarding revoked task: touch[{task_id}]", timeout=30)
        # A task sent after it runs: the worker is past the discarded one.
        after = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert (await follow(server.url, after.json()["id"]))[-1].event == "task.succeeded"
        assert not marker.exists()
        stored = (await http.get(f"/tasks/{task_id}")).json()
        assert stored["state"] == "cancelled"
        assert stored["started_at"] is None
    assert f"touch[{task_id}] succeeded" not in worker.text()


async def test_delete_of_a_finished_task_409(
    shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker("threads")
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ok = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        failed = await http.post("/tasks", json={"name": "fail", "params": {"message": "no"}})
        for posted, outcome in ((ok, "succeeded"), (failed, "failed")):
            task_id = posted.json()["id"]
            assert (await follow(server.url, task_id))[-1].event == f"task.{outcome}"
            answer = await http.delete(f"/tasks/{task_id}")
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"]
            assert (await http.get(f"/tasks/{task_id}")).json()["state"] == outcome
        missing = await http.delete("/tasks/no-such-id")
        assert missing.status_code == 404


# -- 3. the stream rules ------------------------------------------------------------------------


def _same(a: list[SSEEvent], b: list[SSEEvent]) -> None:
    assert [(e.id, e.event, e.json()) for e in a] == [(e.id, e.event, e.json()) for e in b]


async def test_stream_rules_resume_204_reset_global_filter_and_list_order(
    shared_celery_worker: Any, celery_hub: Any, live_server: Any
) -> None:
    shared_celery_worker("threads")
    server = live_server(celery_hub())
    async with httpx.AsyncClient(base_url=server.url, timeout=STREAM_TIMEOUT) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        posted = await http.post("/tasks", json={"name": "steps", "params": {"n": 6, "interval": 0.25}})
        assert posted.status_code == 202, posted.text
        task_id = posted.json()["id"]
        events_url = f"/tasks/{task_id}/events"

        # Live: read two events, drop the connection, resume from the second.
        head: list[SSEEvent] = []
        with anyio.fail_after(STREAM_TIMEOUT):
            async with http.stream("GET", events_url) as live:
                assert live.status_code == 200
                async for event in sse_events(live):
                    if event.event and event.event.startswith("task."):
                        head.append(event)
                    if len(head) == 2 or _ends(event):
                        break
        assert len(head) == 2 and not _ends(head[0])
        resumed_response, resumed = await read(http, events_url, headers={"Last-Event-ID": head[-1].id or ""})
        assert resumed_response.status_code == 200
        resumed = task_events(resumed)
        assert resumed and resumed[-1].event == "task.succeeded"  # and the server ended the stream

        # The whole history of the task, from the global stream filtered to it.
        response, everything = await read(http, f"/events?task={task_id}&last_event_id={cursor}", until=_ends)
        assert response.status_code == 200
        history = task_events(everything)
        types = [e.event for e in history]
        assert types[0] == "task.queued" and types[-1] == "task.succeeded", types
        assert "task.running" in types and types.count("task.progress") >= 1, types
        assert len({e.id for e in history}) == len(history)
        assert all(e.json()["id"] == task_id for e in history)
        start = [e.id for e in history].index(head[0].id)
        _same(head + resumed, history[start:])  # no duplicates, no gaps

        # Resume from every event: exactly the rest, then the end of the stream.
        for i, seen in enumerate(history[:-1]):
            response, rest = await read(http, events_url, headers={"Last-Event-ID": seen.id or ""})
            assert response.status_code == 200
            _same(task_events(rest), history[i + 1 :])
        query = await read(http, f"{events_url}?last_event_id={history[-3].id}")
        _same(task_events(query[1]), history[-2:])

        # The terminal event seen: 204, by header or query.
        done = await http.get(events_url, headers={"Last-Event-ID": history[-1].id or ""})
        assert done.status_code == 204
        assert (await http.get(f"{events_url}?last_event_id={history[-1].id}")).status_code == 204

        # A malformed id: reset, then the current snapshot, then the end.
        for bad in ("garbage", "0-0-0", "-", "9" * 40):
            response, events = await read(http, events_url, headers={"Last-Event-ID": bad})
            assert response.status_code == 200, bad
            named = [e for e in events if e.event]
            assert named[0].event == "reset", (bad, [e.event for e in named])
            assert named[0].json()["reason"]
            _same(task_events(named), history[-1:])

        # /events?task=<id> resumes like the per-task stream (it stays open: read to the end event).
        response, events = await read(
            http, f"/events?task={task_id}", headers={"Last-Event-ID": history[1].id or ""}, until=_ends
        )
        _same(task_events(events), history[2:])

        # GET /tasks: newest first.
        later = []
        for a in range(3):
            answer = await http.post("/tasks", json={"name": "add", "params": {"a": a}})
            assert answer.status_code == 202
            later.append(answer.json()["id"])
        listed = (await http.get("/tasks")).json()["tasks"]
        assert [t["id"] for t in listed] == [*reversed(later), task_id]
        assert listed[-1]["state"] == "succeeded" and listed[-1]["result"] == {"n": 6}
        only_steps = (await http.get("/tasks?name=steps")).json()["tasks"]
        assert [t["id"] for t in only_steps] == [task_id]
        for task in later:
            assert (await follow(server.url, task))[-1].json()["state"] == "succeeded"
        succeeded = (await http.get("/tasks?state=succeeded")).json()["tasks"]
        assert [t["id"] for t in succeeded] == [*reversed(later), task_id]


# -- 4. registration ---------------------------------------------------------------------------


async def test_registration_chosen_tasks_unknown_names_and_the_broker(
    tasks_app: ModuleType, celery_hub: Any, live_server: Any, celery_urls: dict[str, str]
) -> None:
    every = celery_hub()
    offered = set(every.registry)
    assert {"add", "fail", "steps", "celery_progress", "wait", "sleepy", "touch"} <= offered
    assert not any(name.startswith("celery.") for name in offered)
    assert offered <= {name for name in tasks_app.app.tasks if not name.startswith("celery.")}
    bound = every.registry["celery_progress"]  # bind=True: `self` is not a param
    assert [p.name for p in bound.params] == ["n", "interval"]

    only_add = celery_hub(tasks=["add"])
    assert set(only_add.registry) == {"add"}
    server = live_server(only_add)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        other = await http.post("/tasks", json={"name": "fail", "params": {}})
        assert other.status_code == 404, other.text
        assert celery_queue_length(celery_urls) == 0
        add = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert add.status_code == 202, add.text
        assert celery_queue_length(celery_urls) == 1

    with pytest.raises(ValueError, match="nope"):
        celery_hub(tasks=["add", "nope"])
    with pytest.raises(ValueError, match="Redis"):
        celery_hub(broker="memory://")


def test_import_sse_tasks_does_not_import_celery_or_django() -> None:
    code = (
        "import sys, sse_tasks, sse_tasks.client\n"
        "hub = sse_tasks.TaskHub('memory://')\n"
        "engines = ('celery', 'kombu', 'django', 'asgiref', 'rq', 'huey', 'dramatiq',"
        " 'taskiq', 'taskiq_redis', 'arq')\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in engines))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- 5. tokens and the authorization hook --------------------------------------------------------


class WorkerFirst(RedisBroker):
    """Stores the hub's ``queued`` only after a worker has created the task itself (the
    race where a worker starts a task before the hub's write lands, made certain)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.created: dict[str, Task] = {}
        self.hold = True

    async def publish_sent(self, task: Task) -> Any:
        if self.hold and task.id not in self.created:
            with anyio.fail_after(STREAM_TIMEOUT):
                while (found := await self.get(task.id)) is None:
                    await anyio.sleep(0.02)
            self.created[task.id] = found
        return await super().publish_sent(task)


async def test_owner_travels_to_a_worker_created_snapshot_and_other_callers_are_refused(
    shared_celery_worker: Any, celery_hub: Any, live_server: Any, celery_urls: dict[str, str]
) -> None:
    shared_celery_worker("threads")
    broker = WorkerFirst(celery_urls["SSE_TASKS_BROKER"])
    hub = celery_hub(
        broker=broker,
        hub_options={
            "identify": lambda request: request.headers.get("x-user"),
            "authorize": owner_only,
            "tokens": "a test secret of enough length",
            "heartbeat": 0.5,
        },
    )
    server = live_server(hub)
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        anonymous = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert anonymous.status_code in (401, 403), anonymous.text
        posted = await http.post("/tasks", json={"name": "add", "params": {"a": 2, "b": 3}}, headers=alice)
        assert posted.status_code == 202, posted.text
        task_id, token = posted.json()["id"], posted.json()["token"]
        # The worker created the task from the message alone: the owner came in its header.
        created = broker.created[task_id]
        assert created.owner == "alice"
        assert "owner" not in created.to_dict("")

        events = await follow(server.url, task_id, headers=alice)
        assert events[-1].event == "task.succeeded" and events[-1].json()["result"] == 5

        assert (await http.get(f"/tasks/{task_id}", headers=alice)).status_code == 200
        refused = await http.get(f"/tasks/{task_id}", headers=bob)
        assert refused.status_code == 404
        missing = await http.get("/tasks/never-existed", headers=bob)
        assert refused.text.replace(task_id, "never-existed") == missing.text  # nothing learnt
        stream, _ = await read(http, f"/tasks/{task_id}/events", headers=bob)
        assert stream.status_code == 404
        assert (await http.delete(f"/tasks/{task_id}", headers=bob)).status_code == 404
        assert (await http.get(f"/tasks/{task_id}/output", headers=bob)).status_code == 404
        assert [t["id"] for t in (await http.get("/tasks", headers=bob)).json()["tasks"]] == []
        assert [t["id"] for t in (await http.get("/tasks", headers=alice)).json()["tasks"]] == [task_id]
        # A resync (reset, then every visible task's snapshot, then quiet: a ping) hides it too.
        for caller, visible in ((alice, [task_id]), (bob, [])):
            url = "/events?last_event_id=garbage"
            response, events = await read(http, url, headers=caller, until=_pinged)
            assert response.status_code == 200
            assert [e.event for e in events if e.event][:1] == ["reset"]
            assert [e.json()["id"] for e in task_events(events)] == visible

        # Its token opens it to anyone who presents it.
        shown = await http.get(f"/tasks/{task_id}", params={"token": token}, headers=bob)
        assert shown.status_code == 200 and shown.json()["state"] == "succeeded"
        bearer = {**bob, "authorization": f"Bearer {token}"}
        response, events = await read(http, f"/tasks/{task_id}/events", headers=bearer)
        assert response.status_code == 200
        assert [e.event for e in task_events(events)] == ["task.succeeded"]

        # The usual order (the hub stores `queued`, the worker runs it): the same rules.
        broker.hold = False
        usual = await http.post("/tasks", json={"name": "add", "params": {"a": 7}}, headers=alice)
        assert usual.status_code == 202, usual.text
        usual_id = usual.json()["id"]
        assert (await follow(server.url, usual_id, headers=alice))[-1].json()["result"] == 8
        assert (await http.get(f"/tasks/{usual_id}", headers=bob)).status_code == 404
        assert (await http.get(f"/tasks/{usual_id}", headers=alice)).json()["state"] == "succeeded"
        listed = (await http.get("/tasks", headers=alice)).json()["tasks"]
        assert [t["id"] for t in listed] == [usual_id, task_id]
