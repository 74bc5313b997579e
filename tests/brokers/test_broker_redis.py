"""The redis:// broker across real processes, against real redis-servers.

Servers are ``sse-tasks serve`` subprocesses or uvicorn threads with hubs of their
own; each test that restarts or flushes Redis gets a redis-server of its own.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from _redis import Redis, RedisCluster, make_redis
from _support import LiveServer, SSEEvent, collect, free_port, sse_events, submit, task_events, wait_for

from sse_tasks import OutputChunk, Task, TaskHub, TaskState, Unavailable
from sse_tasks._core import codec
from sse_tasks.demo import generated_text, register_demo_tasks

redis = pytest.importorskip("redis")
from sse_tasks.brokers.redis import RedisBroker  # noqa: E402

pytestmark = pytest.mark.anyio

TERMINAL = ("task.succeeded", "task.failed", "task.cancelled")


# -- redis-servers and server processes -----------------------------------------------


@pytest.fixture
def private_redis(request: pytest.FixtureRequest) -> Iterator[Redis]:
    """A Redis of the test's own: one redis-server, or (:data:`ON_BOTH`) a three-master cluster too."""
    server = make_redis(getattr(request, "param", "redis"), "--stream-node-max-entries", "10")
    yield server
    server.close()


#: The behaviours a cluster must keep as one Redis does (resume, trimming, restarts and
#: outages, flushes, leases) run on both; the broker's own logic runs on one redis-server.
ON_BOTH = pytest.mark.parametrize("private_redis", ["redis", "cluster"], indirect=True)


class ServerProcess:
    """``sse-tasks serve`` in a subprocess of its own."""

    def __init__(self, broker: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "sse_tasks", "serve", "--broker", broker, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*args, "--heartbeat", "1", "--log-level", "warning", *extra],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sse-tasks serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/tasks", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("sse-tasks serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module", params=["redis", "cluster"])
def shared_redis(request: pytest.FixtureRequest) -> Iterator[Redis]:
    server = make_redis(request.param)
    yield server
    server.close()


@pytest.fixture(scope="module")
def two_servers(shared_redis: Redis) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Servers A and B: two processes sharing one Redis."""
    broker = shared_redis.url + "?lease=2"
    a = ServerProcess(broker)
    try:
        b = ServerProcess(broker)
    except BaseException:
        a.stop()
        raise
    yield a, b
    for server in (a, b):
        server.stop()


def redis_hub(url: str, **options: Any) -> TaskHub:
    options.setdefault("shutdown_grace", 1.0)
    hub = TaskHub(url, **options)
    register_demo_tasks(hub)
    return hub


# -- helpers -----------------------------------------------------------------------


async def state_of(http: httpx.AsyncClient, task_id: str) -> str:
    return str((await http.get(f"/tasks/{task_id}")).json()["state"])


def ids_and_types(events: list[SSEEvent]) -> list[tuple[str | None, str | None]]:
    """What two streams' events are compared by: their ids and types where every process
    numbers an event alike (one partition); else (a partitioned log's ids are positions
    in each process's own interleaving) their types and data."""
    if any(is_position(e.id) for e in events):
        return [(e.data, e.event) for e in events]
    return [(e.id, e.event) for e in events]


def is_position(event_id: str | None) -> bool:
    """Whether ``event_id`` is a position in a partitioned log (``<digest>_<ms>-<seq>_…``)."""
    return "_" in (event_id or "")


def assert_ordered_without_duplicates(events: list[SSEEvent]) -> None:
    """Each id once, in order: a partition's event ids by their stream id, a partitioned
    log's positions each at or past the one before in every partition."""
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)
    keys = [tuple(int(part) for part in (i or "").split("-")[1:]) for i in ids if not is_position(i)]
    assert keys == sorted(keys)
    positions = [[stream_key(part) for part in (i or "").split("_")[1:]] for i in ids if is_position(i)]
    for earlier, later in itertools.pairwise(positions):
        assert all(a <= b for a, b in zip(earlier, later, strict=True)), (earlier, later)


class Follower:
    """Reads an SSE stream in the background, collecting its events."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        self.client, self.url, self.headers = client, url, headers
        self.events: list[SSEEvent] = []
        self.opened = anyio.Event()
        self.ended = anyio.Event()
        self.status: int | None = None

    async def run(self, until: Callable[[SSEEvent], bool] | None = None) -> None:
        try:
            async with self.client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.opened.set()
                async for event in sse_events(response):
                    self.events.append(event)
                    if until is not None and until(event):
                        break
        finally:
            self.opened.set()
            self.ended.set()

    def of(self, task_id: str) -> list[SSEEvent]:
        return [e for e in task_events(self.events) if e.json()["id"] == task_id]


@pytest.fixture
async def clients(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = two_servers
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a:
        async with httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
            yield on_a, on_b


# -- two processes, one Redis -----------------------------------------------------------


async def test_submit_on_a_follow_list_and_cancel_on_b(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    on_a, on_b = clients
    everything = Follower(on_b, "/events")
    async with anyio.create_task_group() as group:
        group.start_soon(everything.run)
        await everything.opened.wait()
        assert everything.status == 200

        counted = await submit(on_a, "count", n=5, interval=0.05)
        _, followed = await collect(on_b, f"/tasks/{counted['id']}/events")
        changes = task_events(followed)
        assert changes[-1].event == "task.succeeded"
        assert changes[-1].json()["result"] == {"count": 5}
        assert_ordered_without_duplicates(changes)

        slow = await submit(on_a, "sleep", seconds=30)
        await wait_for(lambda: _is(on_b, slow["id"], "running"))
        listed = (await on_b.get("/tasks", params={"state": "running"})).json()["tasks"]
        assert slow["id"] in [t["id"] for t in listed]
        stream = Follower(on_b, f"/tasks/{slow['id']}/events")
        group.start_soon(stream.run)
        await stream.opened.wait()
        cancelled = await on_b.delete(f"/tasks/{slow['id']}")
        assert cancelled.status_code == 202
        assert cancelled.json()["state"] == "cancelled"
        with anyio.fail_after(10):
            await stream.ended.wait()
        assert task_events(stream.events)[-1].event == "task.cancelled"
        assert (await on_a.get(f"/tasks/{slow['id']}")).json()["state"] == "cancelled"
        assert (await on_b.delete(f"/tasks/{slow['id']}")).status_code == 409

        # The live stream on B carried everything A's tasks did, in order.
        await wait_for(lambda: _has(everything, slow["id"], "task.cancelled"))
        group.cancel_scope.cancel()
    seen_live = ids_and_types(everything.of(counted["id"]))
    assert seen_live[0][1] == "task.queued"
    assert seen_live[seen_live.index(ids_and_types(changes)[0]) :] == ids_and_types(changes)
    assert [e.event for e in everything.of(slow["id"])] == ["task.queued", "task.running", "task.cancelled"]


async def _is(http: httpx.AsyncClient, task_id: str, state: str) -> bool:
    return await state_of(http, task_id) == state


async def _has(follower: Follower, task_id: str, event_type: str) -> bool:
    return event_type in [e.event for e in follower.of(task_id)]


async def test_resume_on_another_process_sends_exactly_the_missed_events(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    on_a, on_b = clients
    cursor = (await on_a.get("/tasks")).json()["cursor"]
    task = await submit(on_a, "count", n=8, interval=0.05)
    # Everything the task did, read on B from a cursor A handed out before it existed.
    _, whole = await collect(
        on_b, f"/events?task={task['id']}&last_event_id={cursor}", until=lambda e: e.event in TERMINAL
    )
    full = task_events(whole)
    assert [e.event for e in full][:2] == ["task.queued", "task.running"]
    assert full[-1].event == "task.succeeded"
    assert not [e for e in whole if e.event == "reset"]
    assert_ordered_without_duplicates(full)

    # Read the start on A, disconnect, resume on B: exactly the rest.
    url = f"/tasks/{task['id']}/events"
    _, head = await collect(on_a, url + f"?last_event_id={cursor}", limit=4)
    seen = task_events(head)
    assert ids_and_types(seen) == ids_and_types(full[: len(seen)])
    _, rest = await collect(on_b, url, headers={"last-event-id": seen[-1].id or ""})
    assert ids_and_types(task_events(rest)) == ids_and_types(full[len(seen) :])
    assert not [e for e in rest if e.event == "reset"]
    _, rest_global = await collect(
        on_b,
        f"/events?task={task['id']}",
        headers={"last-event-id": seen[-1].id or ""},
        until=lambda e: e.event in TERMINAL,
    )
    assert ids_and_types(task_events(rest_global)) == ids_and_types(full[len(seen) :])
    # At or past the terminal event, the per-task stream answers 204 on any process.
    response = await on_a.get(url, headers={"last-event-id": full[-1].id or ""})
    assert response.status_code == 204


def chunk_seqs(events: list[SSEEvent]) -> list[int]:
    return [int(e.json()["seq"]) for e in events if e.event == "task.output"]


async def test_output_followed_on_another_process_mid_generation_is_whole_then_exact(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Output is read only where a stream follows it: a follower that connects to B while
    the task writes on A gets every chunk once (stored, then live), and a resume on
    either process from any id continues exactly."""
    on_a, on_b = clients
    words = 60  # 60 output chunks and 6 log lines
    task = await submit(on_a, "generate", words=words, delay=0.01)
    url = f"/tasks/{task['id']}/events"
    _, head = await collect(on_a, url, limit=12)  # mid-generation on A
    assert task_events(head)[0].event in ("task.queued", "task.running")
    _, whole = await collect(on_b, url)
    assert task_events(whole)[-1].event == "task.succeeded"
    assert chunk_seqs(whole) == list(range(words + words // 10))
    written = [e.json() for e in whole if e.event == "task.output"]
    assert "".join(c["text"] for c in written if c["kind"] == "output") == generated_text(words)

    # Every event after the first, resumed on A (stored output, then the log), then a
    # resume on B after each of a few of them.
    _, live = await collect(on_a, url, headers={"last-event-id": task_events(head)[0].id or ""})
    assert not [e for e in live if e.event == "reset"]
    resumed = task_events(head)[:1] + all_events(live)
    assert chunk_seqs(resumed) == chunk_seqs(whole)
    assert_ordered_without_duplicates(resumed)
    for index in (1, 7, len(resumed) // 2, len(resumed) - 2):
        _, rest = await collect(on_b, url, headers={"last-event-id": resumed[index].id or ""})
        assert ids_and_types(all_events(rest)) == ids_and_types(resumed[index + 1 :])


async def test_every_tasks_output_followed_on_another_process_resumes_exactly(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """``/events?output=1`` on B while tasks write on A (on a cluster: in several
    partitions): every chunk once, in order; resumed on A, which interleaves the
    partitions its own way, from an id B sent part way, exactly the rest."""
    on_a, on_b = clients
    cursor = (await on_b.get("/tasks")).json()["cursor"]
    tasks = [await submit(on_a, "generate", words=30, delay=0.005) for _ in range(4)]
    ids = {task["id"] for task in tasks}

    def all_done(had: list[SSEEvent] = []) -> Callable[[SSEEvent], bool]:  # noqa: B006
        """Whether every task has ended, with those ended in ``had`` (read before)."""
        finished = {e.json()["id"] for e in had if e.event == "task.succeeded"}

        def done(event: SSEEvent) -> bool:
            if event.event == "task.succeeded" and event.json()["id"] in ids:
                finished.add(event.json()["id"])
            return finished == ids

        return done

    url = "/events?output=1&name=generate"
    _, whole = await collect(on_b, f"{url}&last_event_id={cursor}", until=all_done())
    assert not [e for e in whole if e.event == "reset"]
    mine = [e for e in all_events(whole) if e.json()["id"] in ids]
    for task_id in ids:
        assert chunk_seqs([e for e in mine if e.json()["id"] == task_id]) == list(range(33))
    assert_ordered_without_duplicates(all_events(whole))
    last_end = max(i for i, e in enumerate(mine) if e.event == "task.succeeded")
    for cut in range(0, last_end, 5):  # (a resume past every end would wait for ever)
        with anyio.fail_after(30):
            resume = f"{url}&last_event_id={mine[cut].id}"
            _, rest = await collect(on_a, resume, until=all_done(mine[: cut + 1]))
        assert not [e for e in rest if e.event == "reset"]
        again = mine[: cut + 1] + [e for e in all_events(rest) if e.json()["id"] in ids]
        assert sorted(ids_and_types(again)) == sorted(ids_and_types(mine))  # each once


def all_events(events: list[SSEEvent]) -> list[SSEEvent]:
    """The task's events, output included."""
    return [e for e in events if e.event and e.event.startswith("task.")]


async def test_a_process_without_a_follower_reads_no_output(private_redis: Redis) -> None:
    """B's log carries A's output only while a stream on B follows the task (or every
    task, ``?output=1``), from the moment it registers."""
    writer, idle = RedisBroker(private_redis.url), RedisBroker(private_redis.url)
    await writer.start(lambda event: None)
    await idle.start(lambda event: None)
    try:
        task = Task(id="t", name="job")
        queued = await writer.publish(task, "task.queued")
        assert queued is not None
        running = await writer.publish(queued.task.evolve(state=TaskState.RUNNING), "task.running")
        assert running is not None
        chunk = functools.partial(OutputChunk, "t", kind="output", level=None)
        first = await writer.publish_outputs(running.task, [chunk(seq=0, text="a")])
        progressed = await writer.publish(running.task.evolve(progress=0.5), "task.progress")
        assert first is not None and progressed is not None
        await wait_for(lambda: idle.log.newest is not None and idle.log.newest >= progressed.key, timeout=10)
        assert not [e for e in idle.log.read(idle.log.first) if e.chunk is not None]
        follow = await idle.follow_output(progressed.task)
        second = await writer.publish_outputs(running.task, [chunk(seq=1, text="b"), chunk(seq=2, text="c")])
        assert second is not None
        await wait_for(lambda: idle.log.newest is not None and idle.log.newest >= second[-1].key, timeout=10)
        follow.close()
        third = await writer.publish_outputs(running.task, [chunk(seq=3, text="d")])
        done = await writer.publish(running.task.evolve(state=TaskState.SUCCEEDED), "task.succeeded")
        assert third is not None and done is not None
        await wait_for(lambda: idle.log.newest is not None and idle.log.newest >= done.key, timeout=10)
        logged = idle.log.read(idle.log.first)
        outputs = [e.chunk.seq for e in logged if e.chunk is not None]
        assert outputs == [1, 2]  # only while followed
        states = ["task.queued", "task.running", "task.progress", "task.succeeded"]
        assert [e.type for e in logged if e.chunk is None] == states
        assert [e.task.progress for e in logged if e.chunk is not None] == [0.5, 0.5]
        assert [c.seq for c in await idle.output("t")] == [0, 1, 2, 3]  # all of it stored
    finally:
        await idle.close()  # task groups nest: the last started closes first
        await writer.close()


async def test_a_process_without_a_stream_decodes_no_snapshot(
    private_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub whose process has no client reads every state change of the cluster but
    decodes none: a task's end is known from the entry (its type and task id)."""
    decoded: list[bytes | str] = []
    loads = codec.loads

    def spy(data: bytes | str) -> Any:
        decoded.append(data)
        return loads(data)

    writer, idle = RedisBroker(private_redis.url), redis_hub(private_redis.url)
    await writer.start(lambda event: None)
    try:
        async with idle:
            monkeypatch.setattr(codec, "loads", spy)
            queued = await writer.publish(Task(id="quiet", name="job"), "task.queued")
            assert queued is not None
            running = await writer.publish(queued.task.evolve(state=TaskState.RUNNING), "task.running")
            assert running is not None
            done = await writer.publish(running.task.evolve(state=TaskState.SUCCEEDED), "task.succeeded")
            assert done is not None
            log = idle.broker.log
            await wait_for(lambda: log.newest is not None and log.newest >= done.key, timeout=10)
            monkeypatch.undo()
            assert [e.type for e in log.read(log.first) if e.task_id == "quiet"] == [
                "task.queued",
                "task.running",
                "task.succeeded",
            ]
            assert not [d for d in decoded if (b"quiet" if isinstance(d, bytes) else "quiet") in d]
    finally:
        await writer.close()


@ON_BOTH
async def test_history_older_than_the_local_ring_comes_from_redis(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    first = live_server(redis_hub(private_redis.url, progress_interval=0))
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as on_first:
        cursor = (await on_first.get("/tasks")).json()["cursor"]
        task = await submit(on_first, "count", n=30, interval=0.01)
        _, whole = await collect(on_first, f"/tasks/{task['id']}/events?last_event_id={cursor}")
        full = task_events(whole)
        assert full[-1].event == "task.succeeded"
        assert len(full) > 10

    # A process started afterwards holds none of it locally: resuming reads Redis.
    later = live_server(redis_hub(private_redis.url, history=1000))
    async with httpx.AsyncClient(base_url=later.url, timeout=30) as on_later:
        url = f"/events?task={task['id']}&last_event_id={full[5].id}"
        _, rest = await collect(on_later, url, until=lambda e: e.event in TERMINAL)
        assert ids_and_types(task_events(rest)) == ids_and_types(full[6:])
        assert not [e for e in rest if e.event == "reset"]
        # The task's own stream too (on a cluster: from its partition's history, its
        # events numbered with their own ids, each a key in its partition).
        headers = {"last-event-id": full[5].id or ""}
        _, rest = await collect(on_later, f"/tasks/{task['id']}/events", headers=headers)
        assert [(e.event, e.data) for e in task_events(rest)] == [(e.event, e.data) for e in full[6:]]
        assert not [e for e in rest if e.event == "reset"]


@ON_BOTH
async def test_cursor_older_than_the_retained_history_resyncs(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(redis_hub(private_redis.url, progress_interval=0, history=20))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        task = await submit(http, "count", n=150, interval=0.002)
        _, whole = await collect(http, f"/tasks/{task['id']}/events")
        assert task_events(whole)[-1].event == "task.succeeded"
        prefix, part = private_redis.prefix_of(task["id"])
        with private_redis.client(prefix) as client:
            oldest = client.xrange(f"{prefix}:log", count=1)[0][0].decode()
            assert client.xlen(f"{prefix}:log") < 100  # MAXLEN ~ 20 trimmed the stream
        at = cursor.split("_")[1 + part] if is_position(cursor) else cursor.split("-", 1)[1]
        assert stream_key(oldest) > stream_key(at), "nothing was trimmed"
        url = f"/events?last_event_id={cursor}"
        _, events = await collect(http, url, until=lambda e: e.event in TERMINAL)
        assert events[1].event == "reset"
        assert [e.json()["state"] for e in task_events(events)] == ["succeeded"]


def stream_key(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


# -- one reader per process ------------------------------------------------------------


async def test_a_thousand_subscribers_use_a_handful_of_redis_connections(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    hub = redis_hub(private_redis.url, max_streams=2000)
    server = live_server(hub)
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(1000):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
            streams.append((reader, writer))
        await wait_for(lambda: hub.open_streams >= 1000, timeout=30)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            task = await submit(http, "fail", message="fan-out")

        async def received(reader: asyncio.StreamReader) -> bool:
            await reader.readuntil(b"event: task.failed")
            return True

        with anyio.fail_after(30):
            results = await asyncio.gather(*(received(reader) for reader, _ in streams))
        assert all(results)
        name = f"sse-tasks-{hub.broker.worker_id}"  # type: ignore[attr-defined]
        with private_redis.client() as client:
            mine = [c for c in client.client_list() if c["name"] == name]
        assert 1 <= len(mine) <= 4, f"{len(mine)} Redis connections for 1000 streams"
        assert task["name"] == "fail"
    finally:
        for _, writer in streams:
            writer.close()


# -- failures ------------------------------------------------------------------------


@ON_BOTH
async def test_tasks_of_a_killed_worker_fail_with_worker_lost(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    lease = 1.0
    survivor = live_server(redis_hub(private_redis.url + f"?lease={lease}"))
    victim = ServerProcess(private_redis.url + f"?lease={lease}")
    try:
        async with httpx.AsyncClient(base_url=victim.url, timeout=30) as on_victim:
            running = await submit(on_victim, "sleep", seconds=60)
            other = await submit(on_victim, "count", n=1000, interval=0.05)
        async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as http:
            await wait_for(lambda: _is(http, running["id"], "running"))
            await wait_for(lambda: _is(http, other["id"], "running"))
            follow = Follower(http, f"/tasks/{running['id']}/events")
            async with anyio.create_task_group() as group:
                group.start_soon(follow.run)
                await follow.opened.wait()
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(10)
                killed_at = time.monotonic()
                with anyio.fail_after(lease * 3 + 2):
                    await follow.ended.wait()
                elapsed = time.monotonic() - killed_at
            final = task_events(follow.events)[-1]
            assert final.event == "task.failed"
            assert final.json()["error"]["type"] == "WorkerLost"
            assert elapsed <= lease * 2 + 1
            await wait_for(lambda: _is(http, other["id"], "failed"))
            assert (await http.get(f"/tasks/{other['id']}")).json()["error"]["type"] == "WorkerLost"
    finally:
        victim.stop()


@ON_BOTH
async def test_streams_survive_a_redis_restart_and_catch_up(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "count", n=20, interval=0.1)
        one = Follower(http, f"/tasks/{task['id']}/events")
        everything = Follower(http, "/events")
        async with anyio.create_task_group() as group:
            group.start_soon(one.run)
            group.start_soon(everything.run, lambda e: e.event in TERMINAL)
            await wait_for(lambda: _progressed(one))
            private_redis.stop(save=True)
            refused = await http.post("/tasks", json={"name": "fail"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "broker_unavailable"
            assert refused.headers["retry-after"].isdigit()
            assert (await http.get(f"/tasks/{task['id']}")).status_code == 503
            await anyio.sleep(0.3)  # the outage: the task keeps running meanwhile
            private_redis.start()
            with anyio.fail_after(15):
                await one.ended.wait()
                await everything.ended.wait()
    for follower in (one, everything):
        got = task_events(follower.events)
        assert got[-1].event == "task.succeeded"
        assert got[-1].json()["result"] == {"count": 20}
        assert not [e for e in follower.events if e.event == "reset"]
        assert_ordered_without_duplicates(got)
    assert (await _fresh_get(server, task["id"]))["state"] == "succeeded"


@ON_BOTH
async def test_a_final_event_lost_to_a_long_outage_ends_worker_lost(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    hub = redis_hub(private_redis.url + "?lease=1&outage_grace=0.3")
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "sleep", seconds=0.5)
        await wait_for(lambda: _is(http, task["id"], "running"))
        private_redis.stop(save=True)

        async def run_over() -> bool:
            return hub.running == 0  # finished; its final event could not be stored

        await wait_for(run_over)
        private_redis.start()
        await wait_for(lambda: _is(http, task["id"], "failed"))
        final = (await http.get(f"/tasks/{task['id']}")).json()
        assert final["error"]["type"] == "WorkerLost"


async def _progressed(follower: Follower) -> bool:
    return len([e for e in follower.events if e.event == "task.progress"]) >= 2


async def _fresh_get(server: LiveServer, task_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return dict((await http.get(f"/tasks/{task_id}")).json())


@ON_BOTH
async def test_a_flushed_redis_resyncs_streams_never_continues_them(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        before = await submit(http, "fail", message="before")
        _, done = await collect(http, f"/tasks/{before['id']}/events")
        old_id = task_events(done)[-1].id or ""
        live = Follower(http, "/events")
        async with anyio.create_task_group() as group:
            group.start_soon(live.run, lambda e: e.event == "task.failed")
            await live.opened.wait()
            private_redis.flush()
            after = await submit(http, "fail", message="after")
            with anyio.fail_after(10):
                await live.ended.wait()
        # The open stream was told to drop what it held, and why, then went on in the new
        # history.
        resets = [e.json()["reason"] for e in live.events if e.event == "reset"]
        assert resets == ["the broker's history was flushed or replaced"]
        assert task_events(live.events)[-1].json()["id"] == after["id"]
        cursor = (await http.get("/tasks")).json()["cursor"]
        assert cursor.split("-")[0] != old_id.split("-")[0]
        # An id from the old history resyncs; the flushed task is gone.
        url = f"/events?last_event_id={old_id}"
        _, resumed = await collect(http, url, until=lambda e: e.event in TERMINAL)
        assert resumed[1].event == "reset"
        assert [e.json()["id"] for e in task_events(resumed)] == [after["id"]]
        assert (await http.get(f"/tasks/{before['id']}/events")).status_code == 404


# -- retention -----------------------------------------------------------------------


async def test_reads_that_fill_count_lose_hold_back_and_repeat_nothing(
    private_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reads of 3 entries per stream, a follower's log still gets every chunk once,
    in order, and the end: what waits past a stream that filled its read is taken once
    every stream has answered it has nothing more (here: the task's end, written right
    after its last 3 chunks)."""
    from sse_tasks.brokers.redis import reader
    from sse_tasks.brokers.redis.sync import SyncWriter

    monkeypatch.setattr(reader, "BATCH", 3)
    follower = RedisBroker(private_redis.url)
    await follower.start(lambda event: None)
    writer = SyncWriter(RedisBroker(private_redis.url))
    try:
        everything = await follower.follow_output(None)
        task = Task(id="t", name="job")
        running = writer.running(task.evolve(state=TaskState.RUNNING), create=task)
        assert running is not None
        await wait_for(
            lambda: (follower.log.newest or (0, 0)) >= follower.parse_event_id(running.event_id or "")
        )
        # Blocking writes: the follower's reader (on this loop) reads them only afterwards.
        for seq in range(13):  # the first wakes the blocked read; 12 = 4 full reads follow
            assert writer.output(OutputChunk("t", seq, "output", f"{seq} ", None)) is not None
        done = writer.final(running.evolve(state=TaskState.SUCCEEDED))
        assert done is not None
        end = follower.parse_event_id(done.event_id or "")
        await wait_for(lambda: (follower.log.newest or (0, 0)) >= end, timeout=10)
        logged = follower.log.read(follower.log.first)
        assert [e.key for e in logged] == sorted({e.key for e in logged})
        assert [e.chunk.seq for e in logged if e.chunk is not None] == list(range(13))
        assert [e.type for e in logged][-1] == "task.succeeded"
        everything.close()
    finally:
        writer.close()
        await follower.close()


async def test_ids_of_the_layout_before_output_streams_resync(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    """Redis still holds the older layout (output in the shared ``P:events`` stream under
    ``P:epoch``): its ids are never continued, every stream resumed with one resyncs."""
    with private_redis.client() as client:
        client.set("sse_tasks:epoch", "0ld0ld00")
        old = client.xadd("sse_tasks:events", {"e": "0ld0ld00", "t": "task.queued", "d": "{}"}).decode()
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "count", n=2, interval=0.01)
        await collect(http, f"/tasks/{task['id']}/events")
        stale = f"0ld0ld00-{old}"
        for url in (f"/tasks/{task['id']}/events", f"/events?task={task['id']}", "/events?output=1"):
            _, events = await collect(http, url, headers={"last-event-id": stale}, limit=2)
            assert [e.event for e in events][1] == "reset", url
        assert (await http.get("/tasks")).json()["cursor"].split("-")[0] != "0ld0ld00"


#: What another program (or a damaged Redis) may leave under a task's key: none of it
#: is a snapshot. Each is written with ``redis-py``: (command, arguments after the key).
NOT_RECORDS = {
    "not JSON": ("hset", ("d", "{not json")),
    "the wrong shape": ("hset", ("d", '{"id": 5, "state": "weird"}')),
    "not UTF-8": ("hset", ("d", b"\xff\xfe")),
    "not a hash": ("set", ("x",)),
}


async def test_a_task_record_that_is_not_a_snapshot_is_no_task_never_a_500(
    private_redis: Redis, live_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A record the broker did not write is taken as no task: its ``GET`` is a 404, the
    list and the other tasks are served, and each is logged once, not per request."""
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tasks = [await submit(http, "sleep", seconds=0) for _ in range(len(NOT_RECORDS) + 1)]
        for task in tasks:
            await collect(http, f"/tasks/{task['id']}/events")
        spoiled = dict(zip(NOT_RECORDS, tasks, strict=False))
        with private_redis.client() as client:
            for kind, task in spoiled.items():
                command, args = NOT_RECORDS[kind]
                key = f"{private_redis.prefix}:task:{task['id']}"
                if command == "set":
                    client.delete(key)
                getattr(client, command)(key, *args)
        for _ in range(2):
            listed = await http.get("/tasks")
            assert listed.status_code == 200, listed.text
            assert [t["id"] for t in listed.json()["tasks"]] == [tasks[-1]["id"]]
            for kind, task in spoiled.items():
                for path in ("", "/output", "/events"):
                    answer = await http.get(f"/tasks/{task['id']}{path}")
                    assert answer.status_code == 404, (kind, path, answer.text)
                    assert answer.json()["error"]["code"] == "not_found"
    warned = [r for r in caplog.records if "taken as no task" in r.getMessage()]
    assert sorted(r.getMessage().split("'")[1] for r in warned) == sorted(t["id"] for t in spoiled.values())


@pytest.mark.parametrize("shared", ["tasks", "leases", "log"])
async def test_a_shared_key_of_another_kind_answers_503_never_a_500(
    private_redis: Redis, shared: str
) -> None:
    """One of the broker's own keys overwritten by another program (a string where a
    sorted set or the log's stream should be): requests that need it answer 503 naming
    it, as for any Redis that cannot serve, and the broker serves again once it is gone."""
    hub = redis_hub(private_redis.url)
    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            before = await submit(http, "fail")
            await wait_for(lambda: _is(http, before["id"], "failed"))
            key = f"{private_redis.prefix}:{shared}"
            with private_redis.client() as client:
                client.delete(key)
                client.set(key, "another program's")
            response = await http.post("/tasks", json={"name": "fail"})
            assert response.status_code == 503, response.text
            assert "another kind of value" in response.json()["error"]["message"]
            if shared == "tasks":
                assert (await http.get("/tasks")).status_code == 503
            with private_redis.client() as client:
                client.delete(key)
            after = await wait_for(lambda: _accepted(http))
            await wait_for(lambda: _is(http, after, "failed"))


async def _accepted(http: httpx.AsyncClient) -> str | None:
    """The id of a ``fail`` task the hub took, or None while it answers 503."""
    response = await http.post("/tasks", json={"name": "fail"})
    if response.status_code == 503:
        return None
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _queued_on(events: AsyncIterator[SSEEvent], task_id: str) -> None:
    """Read ``events`` up to ``task_id``'s ``task.queued``."""
    async for event in events:
        if event.event == "task.queued" and event.json()["id"] == task_id:
            return


async def test_a_log_entry_that_is_not_a_snapshot_breaks_no_later_output_stream(
    private_redis: Redis, live_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Another program's ``task.progress`` entry, with no snapshot in it, for a finished
    task: a process following every task's output followed it as running, and each
    later ``/events?output=1`` failed decoding it (the reader restarted, no answer)."""
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        finished = await submit(http, "sleep", seconds=0)
        await collect(http, f"/tasks/{finished['id']}/events")
        async with http.stream("GET", "/events", params={"output": "1"}) as first:
            assert first.status_code == 200
            events = sse_events(first)
            with private_redis.client() as client:
                epoch = client.get(f"{private_redis.prefix}:log:epoch")
                fields = {"e": epoch, "t": "task.progress", "k": finished["id"], "d": "{garbage"}
                client.xadd(f"{private_redis.prefix}:log", fields)  # type: ignore[arg-type]
            after = await submit(http, "sleep", seconds=0)
            await _queued_on(events, after["id"])  # read after the entry: it was read too
            for _ in range(2):
                async with http.stream("GET", "/events", params={"output": "1"}) as later:
                    assert later.status_code == 200
                    another = await submit(http, "sleep", seconds=0)
                    await _queued_on(sse_events(later), another["id"])
    assert not [r for r in caplog.records if "reader failed" in r.getMessage()]


@pytest.mark.parametrize("one_millisecond", [False, True], ids=["apart", "one-millisecond"])
async def test_finished_tasks_beyond_max_tasks_expire_oldest_first(
    private_redis: Redis, one_millisecond: bool
) -> None:
    if one_millisecond:
        # The history's last id a minute ahead of the clock: every event that follows
        # shares its millisecond, so only the ids' order tells the oldest finished task.
        with private_redis.client() as client:
            ms = int(client.time()[0]) * 1000 + 60_000
            client.set("sse_tasks:log:last", f"{ms}-0")
    hub = redis_hub(private_redis.url, retention=3600, max_tasks=2, concurrency=1)  # finish in order
    async with hub:
        tasks = [await hub.submit("fail") for _ in range(3)]
        await _until_finished(hub, "failed", 3)
        assert await hub.broker.get(tasks[0].id) is None  # over max_tasks: expired first
        assert await hub.broker.expired(tasks[0].id)
        for task in tasks[1:]:
            stored = await hub.broker.get(task.id)
            assert stored is not None and stored.state.value == "failed"
        with private_redis.client() as client:
            ttl = client.pttl(f"{private_redis.prefix}:task:{tasks[2].id}")
        assert 0 < ttl <= 3_600_000
        assert [t.id for t in await hub.list_tasks()] == [tasks[2].id, tasks[1].id]
        assert not await hub.broker.expired("never-existed")


async def test_finished_tasks_expire_after_retention(private_redis: Redis) -> None:
    hub = redis_hub(private_redis.url, retention=0.2)
    async with hub:
        task = await hub.submit("fail")
        # Its final event is counted once stored; the snapshot may already have expired.
        await _until_finished(hub, "failed", 1)

        async def expired() -> bool:
            return await hub.broker.get(task.id) is None

        await wait_for(expired, timeout=10)
        assert await hub.broker.expired(task.id)
        assert [t.id for t in await hub.list_tasks()] == []


async def _until_finished(hub: TaskHub, state: str, count: int) -> None:
    async def finished() -> bool:
        return hub.stats.tasks[state] >= count

    await wait_for(finished)


def test_options_come_from_keywords_then_the_url() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/3?lease=2.5&history=50&prefix=app&socket_timeout=3", history=70)
    assert (broker.lease, broker.history, broker.prefix) == (2.5, 70, "app")
    assert broker.url == "redis://127.0.0.1:1/3?socket_timeout=3"
    with pytest.raises(ValueError, match="lease"):
        RedisBroker("redis://127.0.0.1:1/0?lease=soon")
    with pytest.raises(ValueError):
        RedisBroker("redis://127.0.0.1:1/0", lease=0)


def test_every_engine_hook_takes_a_cluster_url() -> None:
    from sse_tasks.brokers import broker_from_url, is_redis_url

    for url in (
        "redis://h/0",
        "rediss://h/0",
        "unix:///r.sock",
        "redis+cluster://h:1",
        "rediss+cluster://h:1",
    ):
        assert is_redis_url(url) and isinstance(broker_from_url(url), RedisBroker)
    assert not is_redis_url("memory://") and not is_redis_url("redis-cluster://h:1")
    huey = pytest.importorskip("huey")
    from sse_tasks.executors.huey.hook import connect

    hook = connect(huey.MemoryHuey("cluster-url"), "redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert hook.broker.url == "redis+cluster://127.0.0.1:1,127.0.0.1:2"


def test_cluster_urls_name_nodes_and_no_other_database() -> None:
    ipv6 = RedisBroker("redis+cluster://[::1]:7000,127.0.0.1:7001")
    assert ipv6.pool_arguments(asyncio=True)[0] == "redis://[::1]:7000/0"
    assert ipv6.pool_arguments(asyncio=True)[1]["startup_nodes"] == [("::1", 7000), ("127.0.0.1", 7001)]
    broker = RedisBroker("redis+cluster://user:pw@127.0.0.1:7000,[::1]:7001?lease=5&socket_timeout=3")
    assert broker.lease == 5 and broker.key_prefix == "{sse_tasks}"
    assert broker.pool_arguments(asyncio=True)[0] == "redis://user:pw@127.0.0.1:7000/0?socket_timeout=3"
    assert broker.pool_arguments(asyncio=False)[1]["startup_nodes"] == [("127.0.0.1", 7000), ("::1", 7001)]
    assert RedisBroker("redis+cluster://h:1?prefix={app}:tasks").key_prefix == "{app}:tasks"
    assert RedisBroker("redis+cluster://h:1?prefix=app{}").key_prefix == "{app{}}"  # {} is no tag
    assert RedisBroker("redis+cluster://h:1?prefix=a}b").key_prefix == "{a}b}"  # tag "a": one slot
    assert RedisBroker("redis+cluster://h:1?db=0").key_prefix == "{sse_tasks}"
    for bad in (
        "redis+cluster://h:1/2",
        "redis+cluster://h:1?db=2",
        "redis+cluster://h:1?db=0&db=1",
        "redis+cluster://h:1,h",
        "redis+cluster://h:1,:2",
        "redis+cluster://h:99999",
        "redis+cluster://h:0",
        "redis+cluster://h:1,h:70000",
        "redis+cluster://h:\u00b2",
    ):
        with pytest.raises(ValueError, match="Redis Cluster URL"):
            RedisBroker(bad)
    # redis-py's own settings are checked as the broker is made, not at its first connect.
    for bad in ("redis://h:1/0?socket_timeout=abc", "redis+cluster://h:1?health_check_interval=x"):
        with pytest.raises(ValueError, match="Redis URL: Invalid value for"):
            RedisBroker(bad)
    # Those redis-py checks only as it makes a connection (each started a reader that
    # failed for ever, and a request answered 500), for the hub's and the workers' clients.
    for bad, told in (
        ("rediss://h:1/0?ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements Flag: bogus"),
        ("rediss+cluster://h:1?ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements Flag: bogus"),
        ("redis://h:1/0?ssl_cert_reqs=none", "'ssl_cert_reqs' is not a setting of a redis:// connection"),
        ("redis+cluster://h:1?ssl_ca_certs=x", "'ssl_ca_certs' is not a setting of a redis\\+cluster://"),
        ("redis://h:1/0?protocol=9", "protocol must be either 2 or 3"),
    ):
        with pytest.raises(ValueError, match=f"^Redis URL: {told}"):
            RedisBroker(bad)
    for good in ("rediss://h:1/0?ssl_cert_reqs=none", "rediss+cluster://h:1?ssl_cert_reqs=required"):
        RedisBroker(good)
    # A prefix that makes no hash tag would spread the keys over the slots (a 500 on every
    # request, the scripts' keys in several slots): refused.
    for prefix in ("", "}", "}{", "}x"):
        with pytest.raises(ValueError, match="no hash tag"):
            RedisBroker("redis+cluster://h:1", prefix=prefix)


async def test_a_slot_moved_to_another_master_is_found_again(
    live_server: Callable[..., LiveServer],
) -> None:
    cluster = RedisCluster()
    try:
        server = live_server(redis_hub(cluster.url))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            before = await submit(http, "fail")
            await collect(http, f"/tasks/{before['id']}/events")
            follower = Follower(http, "/events")
            async with anyio.create_task_group() as group:
                group.start_soon(follower.run, lambda e: e.event == "task.succeeded")
                await follower.opened.wait()
                cluster.move()
                await wait_for(lambda: _is(http, before["id"], "failed"))  # read from the new master
                after = await submit(http, "count", n=2, interval=0.01)
                with anyio.fail_after(15):
                    await follower.ended.wait()
            assert [e.event for e in follower.of(after["id"])][-1] == "task.succeeded"
            assert not [e for e in follower.events if e.event == "reset"]
    finally:
        cluster.close()


async def test_submissions_get_503_while_redis_is_unreachable() -> None:
    hub = redis_hub(f"redis://127.0.0.1:{free_port()}/0")
    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/tasks", json={"name": "fail"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "broker_unavailable"
            assert (await http.get("/tasks")).status_code == 503


async def test_a_redis_out_of_memory_answers_503_and_runs_nothing(private_redis: Redis) -> None:
    """Redis refusing writes (``maxmemory`` reached, no eviction) is a broker that cannot
    serve now: a 503 with ``Retry-After`` and the task never runs, never a 500."""
    hub = redis_hub(private_redis.url)
    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            before = await submit(http, "fail")
            with private_redis.client() as client:
                client.config_set("maxmemory-policy", "noeviction")
                client.config_set("maxmemory", 1)
                try:
                    response = await http.post("/tasks", json={"name": "count", "params": {"n": 1}})
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "broker_unavailable"
                    assert response.headers["retry-after"].isdigit()
                    listed = await http.get("/tasks")  # reads go on
                    assert [t["id"] for t in listed.json()["tasks"]] == [before["id"]]
                finally:
                    client.config_set("maxmemory", 0)
            after = await submit(http, "count", n=1, interval=0)
            await wait_for(lambda: _is(http, after["id"], "succeeded"))
            listed = {t["id"] for t in (await http.get("/tasks")).json()["tasks"]}
            assert listed == {before["id"], after["id"]}  # the refused one stored nothing


async def test_an_outcome_posted_while_redis_refuses_writes_is_sent_again(private_redis: Redis) -> None:
    """A worker's outcome sent without waiting, answered "out of memory": kept and sent
    again once Redis takes writes, not dropped (the task would end ``WorkerLost``)."""
    from sse_tasks.brokers.redis.sync import SyncWriter

    writer = SyncWriter(RedisBroker(private_redis.url))
    try:
        queued = Task(id="posted-under-oom", name="work")
        assert writer.create(queued) is not None
        with private_redis.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)
            try:
                done = queued.evolve(state=TaskState.SUCCEEDED, result=1)
                writer.final(done, retry_for=60, wait=False)
                with pytest.raises(writer.unreachable):
                    writer.settle()  # its answer: kept to be sent again
                assert writer.get(queued.id).state is TaskState.QUEUED
            finally:
                client.config_set("maxmemory", 0)
        writer.settle()
        assert writer.get(queued.id).state is TaskState.SUCCEEDED
    finally:
        writer.close()


async def test_a_redis_user_denied_the_scripts_answers_503_naming_it(private_redis: Redis) -> None:
    """An ACL that denies the broker's scripts: 503s that say so, never a 500 per request."""
    with private_redis.client() as client:
        client.acl_setuser(
            "limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-evalsha"]
        )
    url = private_redis.url.replace("redis://", "redis://limited:pw@")
    hub = redis_hub(url)
    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/tasks", json={"name": "fail"})
            assert response.status_code == 503, response.text
            assert "no permissions to run the 'evalsha' command" in response.json()["error"]["message"]
            assert (await http.get("/tasks")).status_code == 503  # its reader cannot sync either


async def test_a_redis_busy_with_a_script_answers_503(private_redis: Redis) -> None:
    """``BUSY`` (another client's script runs past ``busy-reply-threshold``) is an error
    redis-py has no class for: the hub answers 503 and a worker's writer takes it as
    Redis unreachable (its writes wait and retry), never as a broken record or a 500."""
    from sse_tasks.brokers.redis.sync import SyncWriter

    hub = redis_hub(private_redis.url)
    writer = SyncWriter(RedisBroker(private_redis.url))
    with private_redis.client() as client:
        client.config_set("busy-reply-threshold", 10)
    # Spins until killed (a minute at most, should the test die before it kills it).
    spinning = "local t = redis.call('TIME') while redis.call('TIME')[1] - t[1] < 60 do end"

    def spin() -> None:
        with private_redis.client() as spinner:
            with pytest.raises(redis.exceptions.ResponseError):  # killed below
                spinner.eval(spinning, 0)

    def busy() -> bool:
        with private_redis.client() as client:
            try:
                client.ping()
            except redis.exceptions.ResponseError as exc:
                return str(exc).startswith("BUSY")
        return False

    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            async with anyio.create_task_group() as group:
                group.start_soon(functools.partial(anyio.to_thread.run_sync, spin, abandon_on_cancel=True))
                try:
                    await wait_for(lambda: anyio.to_thread.run_sync(busy))
                    response = await http.post("/tasks", json={"name": "fail"})
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "broker_unavailable"
                    assert (await http.get("/tasks/nope")).status_code == 503
                    with pytest.raises(writer.unreachable):
                        await anyio.to_thread.run_sync(writer.get, "nope")
                finally:
                    writer.close()
                    with private_redis.client() as client:
                        client.script_kill()
            after = await submit(http, "fail")
            await wait_for(lambda: _is(http, after["id"], "failed"))


# -- the command line --------------------------------------------------------------------


async def test_serve_with_several_workers(private_redis: Redis) -> None:
    server = ServerProcess(private_redis.url, "--workers", "2")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tasks = [await submit(http, "count", n=3, interval=0.02) for _ in range(6)]
            for task in tasks:
                _, events = await collect(http, f"/tasks/{task['id']}/events")
                assert task_events(events)[-1].event == "task.succeeded"
            listed = (await http.get("/tasks", params={"state": "succeeded"})).json()["tasks"]
            assert {t["id"] for t in tasks} <= {t["id"] for t in listed}

        async def both_workers_connected() -> bool:
            # Each worker process follows the stream on a connection named after it.
            with private_redis.client() as client:
                names = {c["name"] for c in client.client_list() if c["name"].startswith("sse-tasks-")}
            return len(names) == 2

        await wait_for(both_workers_connected, timeout=20)
    finally:
        server.stop()
    assert server.proc.returncode is not None


# -- outages decided before a stream starts, cancels that stay local ---------------------


@ON_BOTH
async def test_a_resync_during_an_outage_is_refused_before_the_stream_starts(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "fail")
        _, done = await collect(http, f"/tasks/{task['id']}/events")
        old_id = task_events(done)[-1].id or ""
        await submit(http, "fail")
        private_redis.stop(save=True)
        for url, headers in [
            ("/events", {"Last-Event-ID": "not-an-id"}),
            ("/events?last_event_id=garbage", {}),
            (f"/events?task={task['id']}", {"Last-Event-ID": "x"}),
            (f"/tasks/{task['id']}/events", {"Last-Event-ID": old_id}),
        ]:
            response = await http.get(url, headers=headers)
            assert response.status_code == 503, (url, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.json()["error"]["code"] == "broker_unavailable"
            assert response.headers["retry-after"].isdigit()


@ON_BOTH
async def test_a_delete_during_an_outage_cancels_a_task_running_or_queued_here(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    hub = redis_hub(private_redis.url, concurrency=1)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        running = await submit(http, "sleep", seconds=60)
        waiting = await submit(http, "sleep", seconds=60)  # queued behind it
        await wait_for(lambda: _is(http, running["id"], "running"))
        private_redis.stop(save=True)
        for task in (waiting, running):
            answer = await http.delete(f"/tasks/{task['id']}")
            assert answer.status_code == 202, answer.text
            assert answer.json()["state"] == "cancelled"
        # A task this process does not run cannot be cancelled without Redis.
        elsewhere = await http.delete("/tasks/not-here")
        assert elsewhere.status_code == 503
        assert elsewhere.json()["error"]["code"] == "broker_unavailable"
        with pytest.raises(Unavailable):
            await anyio.to_thread.run_sync(server.call, hub.cancel("not-here"))
        private_redis.start()
        # Stored once Redis answers (the retried final event), long before its 60 s end.
        for task in (running, waiting):
            await wait_for(lambda task_id=task["id"]: _is(http, task_id, "cancelled"), timeout=15)
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            assert [e.event for e in task_events(events)] == ["task.cancelled"]
        assert (await http.get(f"/tasks/{waiting['id']}")).json()["started_at"] is None  # never ran


async def test_a_history_that_went_back_resyncs_streams(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    """Redis restarted from an older snapshot (as a failover to a replica that had not
    received the latest writes): the same history, without its last events. An open
    stream is told so (``reset``), never continued as if the lost task still existed."""
    hub = redis_hub(private_redis.url)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        kept = await submit(http, "fail", message="kept")
        await collect(http, f"/tasks/{kept['id']}/events")
        private_redis.client().save()  # what the restart goes back to
        live = Follower(http, "/events")
        async with anyio.create_task_group() as group:
            group.start_soon(live.run, lambda e: e.event == "reset")
            await live.opened.wait()
            lost = await submit(http, "fail", message="lost")

            async def lost_seen() -> bool:
                return any(e.event == "task.failed" for e in live.of(lost["id"]))

            await wait_for(lost_seen)
            private_redis.stop(save=False)
            private_redis.start()
            with anyio.fail_after(15):
                await live.ended.wait()
        assert [e.json()["reason"] for e in live.events if e.event == "reset"] == [
            "the broker's history went back: writes were lost"
        ]
        assert (await http.get(f"/tasks/{lost['id']}")).status_code == 404
        assert (await http.get(f"/tasks/{kept['id']}")).json()["state"] == "failed"
    # The lost writes are not waited for as if they were still to be read back (5 s).
    await anyio.to_thread.run_sync(functools.partial(server.call, hub.shutdown(), timeout=4))


async def test_a_history_that_went_back_is_told_even_after_new_writes(redis_url: str, redis_db: int) -> None:
    """The reader's check on reconnecting, as Redis answers it (``sync.lua``): a log entry
    it read is gone though nothing was trimmed past it, even once later writes took the
    last id given past it (a failover that lost writes, then a worker's write); and a
    ``last`` that was merely lost (evicted) is no history that went back."""
    from redis.asyncio import Redis as AsyncRedis

    from sse_tasks import Task
    from sse_tasks.brokers.redis.scripts import Scripts
    from sse_tasks.brokers.redis.sync import SyncWriter

    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    broker = RedisBroker(url)
    writer, keys, sync = SyncWriter(broker), broker.keys, Scripts().sync
    client = AsyncRedis.from_url(url)
    try:
        first = writer.create(Task(id="kept", name="work"))
        lost = writer.create(Task(id="lost", name="work"))
        assert first is not None and first.event_id and lost is not None and lost.event_id
        kept_id, lost_id = (str(e.event_id).partition("-")[2] for e in (first, lost))

        async def intact(after: str, seen: str) -> int:
            reply = await sync(client, keys.history, {"new_epoch": "x", "after": after, "seen": seen})
            return int(reply[2])

        assert await intact(lost_id, lost_id) == 1
        await client.xdel(keys.events, lost_id)  # the history went back: "lost" never happened
        await client.set(keys.last, kept_id)
        assert await intact(lost_id, lost_id) == 2
        assert writer.create(Task(id="later", name="work")) is not None  # the last id passes it
        assert await intact(lost_id, lost_id) == 2
        # ``last`` evicted while the reader stood at an output id past the log's newest:
        # nothing went back.
        later_id = (await client.xrevrange(keys.events, count=1))[0][0].decode()
        await client.delete(keys.last)
        past = f"{int(later_id.split('-')[0]) + 5}-0"
        assert await intact(past, later_id) == 1
    finally:
        writer.close()
        await client.aclose()
        await broker.close()


@pytest.mark.parametrize("late", ["script", "reply"])
async def test_a_flush_told_by_a_concurrent_sync_is_not_undone_by_the_readers(
    late: str, redis_url: str, redis_db: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two syncs in flight around a flush (the reader's and a submit's), the submit's
    adopting the new history first. The reader's, answered after it, judged what came
    before: its positions in the old history (``script``: run after the flush, it would
    take them for lost writes) or the old history itself (``reply``: run before the
    flush, it would adopt it again). The log restarts once, for the flush."""
    import contextlib

    from redis.asyncio import Redis as AsyncRedis

    from sse_tasks._core.log import EventLog
    from sse_tasks.brokers.redis.keys import Keys
    from sse_tasks.brokers.redis.link import Link
    from sse_tasks.brokers.redis.reader import StreamReader
    from sse_tasks.brokers.redis.scripts import Scripts

    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    client = AsyncRedis.from_url(url)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[AsyncRedis]:
        yield client

    scripts, keys, log = Scripts(), Keys("concurrent-sync"), EventLog(100)
    reader = StreamReader(log, keys, scripts, Link(), connect, lambda event: None, "here")

    async def flush() -> None:
        await client.delete(keys.epoch, keys.last, keys.events)

    try:
        await reader.sync()
        seen = await client.xadd(keys.events, {"e": "1"})
        await client.set(keys.last, seen)
        reader.read_from = reader.log_read = seen.decode()
        if late == "script":
            await flush()
        real, taken, turn = scripts.sync, anyio.Event(), anyio.Event()

        async def held(db: AsyncRedis, history: dict[str, str], args: dict[str, str]) -> Any:
            reply = await real(db, history, args) if late == "reply" else None
            taken.set()  # the reader's arguments (and, late == "reply", its answer) are taken
            await turn.wait()
            return reply if late == "reply" else await real(db, history, args)

        monkeypatch.setattr(scripts, "sync", held)
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(reader.sync, client, reader=True))
            await taken.wait()
            monkeypatch.setattr(scripts, "sync", real)
            if late == "reply":
                await flush()
            await reader.sync()  # a submit's: adopts the new history first
            turn.set()
        assert log.behind == "the broker's history was flushed or replaced"
        assert reader.generation == 2
        assert reader.epoch == (await client.get(keys.epoch)).decode()
    finally:
        await flush()
        await client.aclose()


@ON_BOTH
async def test_a_flush_resets_a_per_task_stream_then_ends_it(
    private_redis: Redis, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(redis_hub(private_redis.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        task = await submit(http, "sleep", seconds=30)
        follow = Follower(http, f"/tasks/{task['id']}/events")
        async with anyio.create_task_group() as group:
            group.start_soon(follow.run)
            await follow.opened.wait()
            await wait_for(lambda: _has_any(follow))
            private_redis.flush()
            with anyio.fail_after(15):
                await follow.ended.wait()
        assert follow.status == 200
        assert [e.event for e in follow.events if e.event][-1] == "reset"


async def _has_any(follower: Follower) -> bool:
    return bool(task_events(follower.events))


# -- refusals (a 503 means never) -----------------------------------------------------------


async def test_a_refusal_and_a_worker_s_receipt_exclude_each_other(redis_url: str, redis_db: int) -> None:
    """The hub refuses the id of a task it could not send unless a worker has stored it; once
    refused, no path creates it (a sender's or the hub's queued, a worker's running, its
    cancel) and a worker that receives it is told to discard it."""
    from sse_tasks import Task, TaskState
    from sse_tasks._core.models import utcnow
    from sse_tasks.brokers.redis.sync import SyncWriter

    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    broker = RedisBroker(url, retention=60)
    writer = SyncWriter(broker)
    await broker.start(lambda event: None)
    try:
        refused = Task(id="refused-1", name="add")
        assert await broker.refuse(refused.id)
        assert writer.receive(refused) == "refused"
        running = refused.evolve(state=TaskState.RUNNING, started_at=utcnow())
        cancelled = refused.evolve(state=TaskState.CANCELLED, finished_at=utcnow())
        assert writer.publish(refused, "task.queued", lease="none") is None
        assert writer.publish(running, "task.running", lease="add", create=refused) is None
        assert writer.publish(cancelled, "task.cancelled", lease="xx", create=refused) is None
        assert await broker.publish(refused, "task.queued") is None
        assert writer.receive(refused) == "refused"  # a second delivery: the same answer
        assert await broker.get(refused.id) is None
        assert await broker.list_tasks() == []
        with redis.Redis.from_url(url) as client:
            ttl = client.pttl(f"{broker.prefix}:refused:{refused.id}")
        assert 86_000_000 < ttl <= 86_400_000  # a day, retention being shorter

        taken = Task(id="taken-1", name="add")
        assert writer.receive(taken) == "queued"  # stored as it reaches the worker
        assert not await broker.refuse(taken.id)  # so the hub answers 202: it runs
        assert writer.receive(taken) == "queued"
        stored = await broker.get(taken.id)
        assert stored is not None and stored.state is TaskState.QUEUED
        assert [task.id for task in await broker.list_tasks()] == [taken.id]
        assert await broker.publish(taken.evolve(state=TaskState.CANCELLED), "task.cancelled") is not None
        assert writer.receive(taken) == "cancelled"  # cancelled while it waited: discarded
    finally:
        writer.close()
        await broker.close()


async def test_a_task_an_engine_took_is_accepted_when_redis_fails_to_store_it(
    private_redis: Redis,
) -> None:
    """The engine has the task (its workers run it and store it); Redis then fails to store
    ``queued``: the answer is the task, not a 503 (which would say it never runs)."""
    from sse_tasks.engines import RemoteEngine

    class RedisDiesAsItSends(RemoteEngine):
        """A fake engine: the send is what stops Redis."""

        def registrations(self) -> list[tuple[str, Callable[..., Any]]]:
            return [("work", work)]

        async def send(self, job: Any) -> None:
            await anyio.to_thread.run_sync(lambda: private_redis.stop(save=False))

        async def revoke(self, task: Task) -> None:  # pragma: no cover - nothing is cancelled
            pass

    def work() -> None:  # pragma: no cover - the engine's workers would run it
        pass

    hub = TaskHub(private_redis.url, executor=RedisDiesAsItSends())

    async with hub:
        task = await hub.submit("work")
        assert task.state is TaskState.QUEUED and task.name == "work"
        with pytest.raises(Unavailable):  # Redis is down indeed
            await hub.get(task.id)


async def test_entries_that_cannot_be_decoded_are_skipped_by_every_stream(
    redis_url: str, live_server: Callable[..., LiveServer]
) -> None:
    """The reader decodes an entry when a stream first reads it: one that cannot be decoded
    (not JSON, or not a snapshot) is logged and left out, and what follows it goes on."""
    server = live_server(redis_hub(redis_url))
    keys = RedisBroker(redis_url).keys
    raw = redis.Redis.from_url(redis_url)
    last = ""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        everything = Follower(http, "/events?output=1")
        unfiltered = Follower(http, "/events")
        ended = lambda e: e.event == "task.failed" and e.json()["id"] == last  # noqa: E731
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(everything.run, ended)
                group.start_soon(unfiltered.run, ended)
                await everything.opened.wait()
                await unfiltered.opened.wait()
                first = (await submit(http, "fail", message="before"))["id"]
                await wait_for(lambda: [e.event for e in everything.of(first)][-1:] == ["task.failed"])
                epoch = raw.get(keys.epoch)
                raw.xadd(keys.events, {"e": epoch, "t": "task.progress", "d": b"{not json"})
                raw.xadd(keys.events, {"e": epoch, "t": "task.progress", "d": b"{}"})
                raw.xadd(keys.events, {"e": epoch, "t": "task.output", "d": b"{}", "c": b"[broken"})
                last = (await submit(http, "fail", message="after"))["id"]
    raw.close()
    for follower in (everything, unfiltered):
        assert [e.event for e in follower.of(first)] == ["task.queued", "task.running", "task.failed"]
        assert [e.event for e in follower.of(last)] == ["task.queued", "task.running", "task.failed"]
        assert all(e.event != "reset" for e in follower.events)
        assert len(task_events(follower.events)) == 6


@pytest.fixture
def redis_socket(tmp_path: Any) -> Iterator[str]:
    """A redis-server on a unix socket only; its path."""
    import shutil
    import subprocess

    from _support import wait_until

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    path = tmp_path / "r.sock"
    process = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(path.exists, "redis-server's socket")
        yield str(path)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_unix_socket_url_reaches_redis(redis_socket: str) -> None:
    """``unix:///path?db=…&lease=…``: the broker's options taken out, the socket path kept."""
    url = f"unix://{redis_socket}?db=2&lease=5"
    assert RedisBroker(url).lease == 5
    hub = redis_hub(url)
    async with hub:
        task = await hub.submit("fail")
        await _until_finished(hub, "failed", 1)
        stored = await hub.broker.get(task.id)
        assert stored is not None and stored.state.value == "failed"
    import redis

    with redis.Redis(unix_socket_path=redis_socket, db=2) as client:
        assert client.dbsize() > 0  # in database 2, through the socket


async def test_a_cluster_spreads_the_partitions_over_its_masters(redis_cluster: Any) -> None:
    """Three partitions (the default) on three masters: each master holds the keys of some
    tasks, each task's keys in one slot, and the list spans them all."""
    broker = RedisBroker(redis_cluster.url, prefix="spread")
    assert len(broker.parts) == 3
    await broker.start(lambda event: None)
    try:
        tasks = [Task(id=f"spread-{n}", name="job") for n in range(30)]
        for task in tasks:
            assert await broker.publish(task, "task.queued") is not None
        held: dict[int, set[str]] = {}
        for node in redis_cluster.nodes:
            with node.client() as client:
                held[node.port] = {key.decode().rsplit(":", 1)[1] for key in client.keys("{spread.*:task:*")}
        assert all(held.values()), held  # every master holds some of them
        assert sorted(task_id for ids in held.values() for task_id in ids) == sorted(t.id for t in tasks)
        assert {t.id for t in await broker.list_tasks(limit=100)} == {t.id for t in tasks}
        for task in tasks:  # and each is where its partition is
            part = broker.part_of(task.id)
            assert part.keys.task(task.id).startswith(part.key_prefix)
            assert await broker.get(task.id) is not None
    finally:
        await broker.close()


async def test_ids_of_another_partition_count_resync(
    redis_cluster: Any, live_server: Callable[..., LiveServer]
) -> None:
    """An upgrade that changes the partitions (one before, the default three after) starts a
    new history: every id of the old layout answers ``reset``, never a continuation."""
    before = live_server(redis_hub(redis_cluster.url + "?partitions=1&prefix=upgrade"))
    async with httpx.AsyncClient(base_url=before.url, timeout=30) as http:
        task = await submit(http, "fail")
        _, events = await collect(http, f"/tasks/{task['id']}/events")
        last = task_events(events)[-1]
        assert last.event == "task.failed" and not is_position(last.id)
        cursor = (await http.get("/tasks")).json()["cursor"]
    after = live_server(redis_hub(redis_cluster.url + "?prefix=upgrade"))
    async with httpx.AsyncClient(base_url=after.url, timeout=30) as http:
        position = (await http.get("/tasks")).json()["cursor"]
        assert is_position(position)
        for stale in (last.id, cursor):
            _, events = await collect(
                http, f"/events?last_event_id={stale}", until=lambda e: e.event == "reset"
            )
            assert [e.event for e in events if e.event] == ["reset"]
            assert events[-1].json()["reason"] == "unknown or malformed Last-Event-ID"
        assert (await http.get(f"/tasks/{task['id']}")).status_code == 404  # in the old keys
        # The new layout's own positions resume as they should.
        fresh = await submit(http, "fail")
        _, events = await collect(
            http, f"/events?last_event_id={position}", until=lambda e: e.event == "task.failed"
        )
        assert [e.event for e in task_events(events)] == ["task.queued", "task.running", "task.failed"]
        assert all(e.json()["id"] == fresh["id"] for e in task_events(events))
