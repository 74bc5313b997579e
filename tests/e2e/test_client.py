"""The Python client against real servers, including restarts in the middle of ``follow``."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any, cast

import anyio
import httpx
import pytest
import uvicorn
from _support import LiveServer, free_port

from sse_tasks import (
    AsyncClient,
    Client,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    OutputChunk,
    Task,
    TaskFinished,
    TaskHub,
    TaskState,
    TaskTokens,
)
from sse_tasks.client import APIError, error_from_response
from sse_tasks.demo import generated_text, register_demo_tasks

pytestmark = pytest.mark.anyio


def assert_in_order(snapshots: list[Task]) -> None:
    """Each change once, in order, ending with the one terminal snapshot."""
    ids = [s.event_id for s in snapshots]
    assert None not in ids
    assert len(set(ids)) == len(ids), f"duplicates: {ids}"
    progress = [s.progress for s in snapshots if s.progress is not None]
    assert progress == sorted(progress)
    assert [s.terminal for s in snapshots] == [False] * (len(snapshots) - 1) + [True]


async def test_submit_get_list_cancel_and_follow(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        task = await client.submit("count", n=5, interval=0.01)
        assert task.name == "count"
        assert task.state in (TaskState.QUEUED, TaskState.RUNNING)
        snapshots = [s async for s in client.follow(task.id)]
        assert_in_order(snapshots)
        assert snapshots[-1].state is TaskState.SUCCEEDED
        assert snapshots[-1].result == {"count": 5}
        assert snapshots[-1].progress == 1.0
        assert (await client.get(task.id)).state is TaskState.SUCCEEDED

        sleeper = await client.submit("sleep", {"seconds": 30})
        cancelled = await client.cancel(sleeper.id)
        assert cancelled.state is TaskState.CANCELLED
        listed = await client.list()
        assert [t.id for t in listed] == [sleeper.id, task.id]
        assert [t.id for t in await client.list(state="succeeded")] == [task.id]
        assert [t.id for t in await client.list(name="sleep", limit=1)] == [sleeper.id]


async def test_follow_a_finished_task_yields_its_final_snapshot(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        task = await client.submit("fail", message="nope")
        [s async for s in client.follow(task.id)]  # until it has finished
        snapshots = [s async for s in client.follow(task.id)]
        assert len(snapshots) == 1
        assert snapshots[0].state is TaskState.FAILED
        assert snapshots[0].error == {"type": "RuntimeError", "message": "nope"}
        # Resuming past the terminal event: the server answers 204, the client the snapshot.
        again = [s async for s in client.follow(task.id, last_event_id=snapshots[0].event_id)]
        assert [s.state for s in again] == [TaskState.FAILED]


async def test_error_answers_raise_the_matching_exception(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        with pytest.raises(NotFound, match="no-such-task"):
            await client.submit("no-such-task")
        with pytest.raises(InvalidRequest) as invalid:
            await client.submit("count", n="many")
        assert invalid.value.status_code == 422
        with pytest.raises(NotFound):
            await client.get("missing")
        with pytest.raises(NotFound):
            [s async for s in client.follow("missing")]
        done = await client.submit("fail")
        [s async for s in client.follow(done.id)]  # until it has finished
        with pytest.raises(TaskFinished):
            await client.cancel(done.id)


def test_unmapped_and_non_json_errors() -> None:
    request = httpx.Request("GET", "http://x/tasks")
    body = {"error": {"code": "teapot", "message": "no"}}
    teapot = error_from_response(httpx.Response(418, json=body, request=request))
    assert isinstance(teapot, APIError)
    assert (teapot.status_code, teapot.code) == (418, "teapot")
    answer = httpx.Response(503, text="busy", headers={"Retry-After": "7"}, request=request)
    busy = error_from_response(answer)
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "7"


async def test_a_retry_after_of_days_is_waited_only_up_to_max_retry_after() -> None:
    final = Task(id="t1", name="sleep", state=TaskState.SUCCEEDED, event_id="1-0").to_dict()
    answers = [
        httpx.Response(
            503, json={"error": {"code": "unavailable", "message": "busy"}}, headers={"Retry-After": "999999"}
        ),
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            text=f"id: 1-0\nevent: task.succeeded\ndata: {json.dumps(final)}\n\n",
        ),
    ]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    async with (
        httpx.AsyncClient(transport=transport) as http,
        AsyncClient("http://hub", http=http, max_retry_after=0.01, backoff=0.01) as client,
    ):
        with anyio.fail_after(30):  # (it would wait 11 days for the Retry-After)
            snapshots = [s async for s in client.follow("t1")]
    assert [s.state for s in snapshots] == [TaskState.SUCCEEDED] and not answers


class Endless:
    """A stream body that never ends its line: ``data: xxx…`` in 64 KiB pieces."""

    PIECE = b"x" * 65536

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"retry: 1000\n\nid: 1-0\nevent: task.running\ndata: "
        while self.sent < 10_000:  # 640 MiB: far past any bound the test sets
            self.sent += 1
            yield self.PIECE

    async def pieces(self) -> AsyncIterator[bytes]:
        for piece in self:
            yield piece


def endless_server(body: Endless, asynchronous: bool) -> httpx.MockTransport:
    """Its streams are ``body``; its other answers, those of a task ``t1`` queued."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tasks":
            return httpx.Response(200, json={"tasks": [], "cursor": "c0"})
        if request.url.path == "/tasks/t1":
            return httpx.Response(200, json=Task(id="t1", name="sleep", event_id="0-1").to_dict())
        assert request.headers["accept-encoding"] == "identity"  # streams are asked for as is
        content = body.pieces() if asynchronous else iter(body)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("follow", ["follow", "follow_tasks"])
async def test_a_line_without_end_raises_once_an_event_passes_max_event_size(follow: str) -> None:
    """What the client holds of a stream is bounded: a server that never ends a line gets
    an ``APIError`` once it has sent ``max_event_size`` characters, not the client's memory."""
    body = Endless()
    async with httpx.AsyncClient(transport=endless_server(body, asynchronous=True)) as http:
        client = AsyncClient("http://hub", http=http, max_event_size=1 << 20)
        items = client.follow("t1") if follow == "follow" else client.follow_tasks(task_ids=["t1"])
        with pytest.raises(APIError, match=r"longer than 1048576 characters \(max_event_size\)"):
            [item async for item in items]
    assert 16 <= body.sent <= 18  # 1 MiB in 64 KiB pieces, and no more
    sync_body = Endless()
    with httpx.Client(transport=endless_server(sync_body, asynchronous=False)) as sync_http:
        sync = Client("http://hub", http=sync_http, max_event_size=1 << 20)
        with pytest.raises(APIError, match="max_event_size"):
            list(sync.follow("t1") if follow == "follow" else sync.follow_tasks(task_ids=["t1"]))
    assert 16 <= sync_body.sent <= 18


class Pieces:
    """A body sent in ``count`` pieces of ``size`` bytes, ``pause`` seconds apart; ``sent``
    says how many the client took."""

    def __init__(self, first: bytes, size: int, count: int = 100_000, pause: float = 0.0) -> None:
        self.first, self.piece, self.count, self.pause = first, b"x" * size, count, pause
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        while self.sent < self.count:
            self.sent += 1
            if self.pause:
                time.sleep(self.pause)
            yield self.piece


def pieces_server(status: int, body: Pieces) -> httpx.MockTransport:
    headers = {"content-type": "application/json"}
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, content=iter(body)))


def test_an_answer_without_end_raises_once_it_passes_max_answer_size() -> None:
    body = Pieces(b'{"id": "', 65536)
    with httpx.Client(transport=pieces_server(200, body)) as http:
        client = Client("http://hub", http=http, max_answer_size=1 << 20)
        with pytest.raises(APIError, match=r"larger than 1048576 bytes \(max_answer_size\)"):
            client.get("t1")
    assert 16 <= body.sent <= 17  # 1 MiB in 64 KiB pieces, and no more


def test_an_error_answer_is_read_only_as_far_as_its_first_64_kib() -> None:
    """A 404 whose body never ends is still a ``NotFound``, to ``get`` and to ``follow``."""
    for call in ("get", "follow"):
        body = Pieces(b'{"error": {"code": "not_found", "message": "gone"}}', 4096)
        with httpx.Client(transport=pieces_server(404, body)) as http:
            client = Client("http://hub", http=http)
            with pytest.raises(NotFound):
                client.get("t1") if call == "get" else list(client.follow("t1"))
        assert body.sent <= 17, call  # 64 KiB


def test_timeout_bounds_the_whole_answer_not_each_read() -> None:
    """A server trickling its answer a few bytes at a time is given up after ``timeout``."""
    body = Pieces(b'{"id": "', 1, pause=0.01)
    with httpx.Client(transport=pieces_server(200, body)) as http:
        client = Client("http://hub", http=http, timeout=0.3)
        with pytest.raises(ConnectionFailed, match=r"took longer than 0\.3 s"):
            client.get("t1")
    assert body.sent < body.count


async def test_a_stream_compressed_although_asked_for_as_is_is_refused() -> None:
    """httpx would inflate each read whole: a few KiB of gzip can be a gigabyte of text."""
    packed = gzip.compress(b"data: " + b"x" * (8 << 20))
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=headers, content=packed))
    async with httpx.AsyncClient(transport=transport) as http:
        client = AsyncClient("http://hub", http=http)
        with pytest.raises(APIError, match=r"came compressed \(Content-Encoding: gzip\)"):
            [item async for item in client.follow("t1")]


async def test_unreachable_server_raises_connection_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, retries=2, backoff=0.01) as client:
        with pytest.raises(ConnectionFailed, match="cannot submit"):
            await client.submit("sleep")
        with pytest.raises(ConnectionFailed, match="after 2 retries"):
            [s async for s in client.follow("abc")]


async def test_tags_and_metadata_through_the_clients(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        task = await client.submit("count", n=2, interval=0, tags=["user:42", "report/1"])
        other = await client.submit("sleep", {"seconds": 0}, tags=["user:7"])
        assert task.tags == ("user:42", "report/1") and task.metadata in ({}, {"done": 0, "total": 2})
        snapshots = [s async for s in client.follow(task.id)]
        assert snapshots[-1].metadata == {"done": 2, "total": 2}
        assert [t.id for t in await client.list(tags=["user:42"])] == [task.id]
        assert [t.id for t in await client.list(tags=["user:7", "user:42"])] == []
        with pytest.raises(InvalidRequest):
            await client.submit("sleep", tags=["not a tag"])
    with Client(server.url) as sync:
        assert [t.id for t in sync.list(tags=["user:7"])] == [other.id]
        assert sync.submit("sleep", {"seconds": 0}, tags=["user:7"]).tags == ("user:7",)


def test_sync_client(server: LiveServer) -> None:
    with Client(server.url) as client:
        task = client.submit("count", {"n": 3}, interval=0.01)
        snapshots = list(client.follow(task.id))
        assert_in_order(snapshots)
        assert snapshots[-1].result == {"count": 3}
        assert client.get(task.id).state is TaskState.SUCCEEDED
        assert [t.id for t in client.list()] == [task.id]
        with pytest.raises(TaskFinished):
            client.cancel(task.id)
        with pytest.raises(NotFound):
            list(client.follow("missing"))


def assert_generated(items: list[Task | OutputChunk], words: int, *, first_seq: int = 0) -> None:
    """What following ``generate`` yields: every chunk once and in order, the terminal snapshot last."""
    snapshots = [i for i in items if isinstance(i, Task)]
    chunks = [i for i in items if isinstance(i, OutputChunk)]
    assert len(snapshots) + len(chunks) == len(items)
    last = items[-1]
    assert isinstance(last, Task) and last.state is TaskState.SUCCEEDED, last
    assert last.result == {"words": words}
    assert_in_order(snapshots)
    assert [c.seq for c in chunks] == list(range(first_seq, words + words // 10))
    assert {c.task_id for c in chunks} == {last.id}
    if first_seq == 0:
        assert "".join(c.text for c in chunks if c.kind == "output") == generated_text(words)
        logs = [(c.seq, c.level, c.text) for c in chunks if c.kind == "log"]
        assert logs == [(11 * k - 1, "info", f"{10 * k} of {words} words") for k in range(1, words // 10 + 1)]
    assert all(c.level is None for c in chunks if c.kind == "output")
    assert None not in [c.event_id for c in chunks]


async def test_follow_with_output_yields_every_chunk_once_then_the_terminal_snapshot(
    server: LiveServer,
) -> None:
    async with AsyncClient(server.url) as client:
        task = await client.submit("generate", words=30, delay=0.01)
        live = [item async for item in client.follow(task.id, output=True)]
        assert_generated(live, 30)
        assert await client.output(task.id) == generated_text(30)

        # Finished: its stored output replayed, then its snapshot.
        replayed = [item async for item in client.follow(task.id, output=True)]
        assert_generated(replayed, 30)
        assert sum(isinstance(item, Task) for item in replayed) == 1
        # Resumed after a chunk of that replay: the chunks after it, then the snapshot.
        held = replayed[12]
        assert isinstance(held, OutputChunk) and held.seq == 12
        rest = [item async for item in client.follow(task.id, last_event_id=held.event_id, output=True)]
        assert_generated(rest, 30, first_seq=13)
        # Only snapshots unless asked (what callers of follow got before there was output).
        assert [s.state async for s in client.follow(task.id)] == [TaskState.SUCCEEDED]


def test_follow_with_output_loses_and_repeats_nothing_when_the_stream_is_cut(
    make_hub: Any, live_server: Any
) -> None:
    server = live_server(make_hub(max_stream_lifetime=0.3))
    resumed_from: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/events"):
            resumed_from.append(request.headers.get("last-event-id", ""))

    with httpx.Client(event_hooks={"request": [record]}) as http, Client(server.url, http=http) as client:
        task = client.submit("generate", words=60, delay=0.02)
        items = list(client.follow(task.id, output=True))
    assert_generated(items, 60)
    chunk_ids = {item.event_id for item in items if isinstance(item, OutputChunk)}
    assert resumed_from[0] == ""
    assert len(resumed_from) >= 3, resumed_from  # 1.2 s or more of generation, 0.3 s streams
    assert chunk_ids & set(resumed_from[1:]), "no stream was cut in the middle of the output"


class HubBehindRestartingServer:
    """A hub that keeps running on its loop while uvicorn servers in front of it stop and start.

    This is what a deployment with a shared broker looks like to a client: the server it
    was connected to goes away, another one answers on the same address, the tasks go on.
    """

    def __init__(self, hub: TaskHub) -> None:
        self.hub = hub
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.entered = threading.Event()
        self.hub_run = asyncio.run_coroutine_threadsafe(self._run_hub(), self.loop)
        assert self.entered.wait(10)
        self.server: uvicorn.Server | None = None
        self.serving: Any = None

    async def _run_hub(self) -> None:
        self.release = asyncio.Event()
        async with self.hub:
            self.entered.set()
            await self.release.wait()

    async def _cancel_the_rest(self) -> None:
        # sse-starlette leaves a shutdown watcher task per loop: end it before closing.
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def start(self) -> None:
        config = uvicorn.Config(
            self.hub.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=0.2,
        )
        self.server = uvicorn.Server(config)
        self.serving = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert not self.serving.done(), self.serving.exception()
            time.sleep(0.01)

    def stop(self) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.serving.result(10)

    def close(self) -> None:
        if self.server is not None and not self.serving.done():
            self.stop()
        self.loop.call_soon_threadsafe(self.release.set)
        self.hub_run.result(30)
        asyncio.run_coroutine_threadsafe(self._cancel_the_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def restarting() -> Iterator[HubBehindRestartingServer]:
    hub = TaskHub("memory://", shutdown_grace=0.2)
    register_demo_tasks(hub)
    keeper = HubBehindRestartingServer(hub)
    keeper.start()
    yield keeper
    keeper.close()


async def test_follow_resumes_across_a_server_restart(restarting: HubBehindRestartingServer) -> None:
    resumed_from: list[str] = []

    async def record(request: httpx.Request) -> None:
        if "last-event-id" in request.headers:
            resumed_from.append(request.headers["last-event-id"])

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    async with http, AsyncClient(restarting.url, http=http, backoff=0.05, retries=100) as client:
        task = await client.submit("count", n=40, interval=0.05)
        snapshots: list[Task] = []
        async for snapshot in client.follow(task.id):
            snapshots.append(snapshot)
            if len(snapshots) == 3:

                def restart() -> None:
                    restarting.stop()
                    time.sleep(0.3)  # nobody listening: the client's reconnections fail
                    restarting.start()

                await anyio.to_thread.run_sync(restart)
    assert resumed_from, "the client never reconnected"
    assert resumed_from[0] in [s.event_id for s in snapshots]
    assert_in_order(snapshots)
    assert snapshots[-1].state is TaskState.SUCCEEDED
    assert snapshots[-1].result == {"count": 40}


def start_server_process(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}  # the demo, memory://
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/tasks", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sse-tasks serve did not start")


def test_follow_says_clearly_when_a_restarted_in_memory_server_forgot_the_task() -> None:
    port = free_port()
    proc = start_server_process(port)
    try:
        with Client(f"http://127.0.0.1:{port}", backoff=0.05, retries=200) as client:
            task = client.submit("sleep", seconds=60)
            follow = client.follow(task.id)
            first = next(follow)
            assert first.id == task.id
            proc.kill()
            proc.wait(10)
            proc = start_server_process(port)
            with pytest.raises(NotFound, match="no longer known to the server; it may have restarted"):
                for _ in follow:
                    pass
    finally:
        proc.kill()
        proc.wait(10)


async def test_follow_retries_a_refused_stream_then_gives_up(live_server: Any) -> None:
    hub = TaskHub("memory://", max_streams=0, shutdown_grace=0.2)
    register_demo_tasks(hub)
    server = live_server(hub)
    async with AsyncClient(server.url, retries=1, backoff=0.01) as client:
        task = await client.submit("sleep", seconds=0)
        with pytest.raises(ConnectionFailed, match=r"after 1 retries: too many open streams"):
            [s async for s in client.follow(task.id)]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "bad_request", "BadRequest"),
        (404, "not_found", "NotFound"),
        (409, "already_finished", "TaskFinished"),
        (410, "gone", "TaskGone"),
        (413, "payload_too_large", "PayloadTooLarge"),
        (415, "unsupported_media_type", "UnsupportedMediaType"),
        (422, "invalid_request", "InvalidRequest"),
        (503, "queue_full", "Unavailable"),
        (405, "method_not_allowed", "APIError"),
        (500, "error", "APIError"),
    ],
)
def test_error_codes_map_to_exceptions(status: int, code: str, expected: str) -> None:
    request = httpx.Request("POST", "http://x/tasks")
    body = {"error": {"code": code, "message": "why"}}
    error = error_from_response(httpx.Response(status, json=body, request=request))
    assert type(error).__name__ == expected
    assert (error.status_code, error.code) == (status, code)
    assert error.message == f"why (POST http://x/tasks → {status})"


# -- follow_tasks: every task of a selection ---------------------------------------------------

Item = Task | OutputChunk


def following(items: AsyncIterator[Any]) -> aclosing[AsyncGenerator[Any]]:
    """``follow_tasks`` never ends by itself: close it when the test is done with it."""
    return aclosing(cast(AsyncGenerator[Any], items))


async def take(
    items: AsyncGenerator[Any], until: Callable[[list[Any]], bool], seconds: float = 30
) -> list[Any]:
    """The items that come until ``until(items so far)`` holds (bounded by ``seconds``)."""
    got: list[Any] = []
    with anyio.fail_after(seconds):
        while not until(got):
            got.append(await items.__anext__())
    return got


def finished(task_id: str) -> Callable[[list[Any]], bool]:
    """Until the terminal snapshot of ``task_id`` has come."""
    return lambda got: any(isinstance(i, Task) and i.id == task_id and i.terminal for i in got)


def of(items: list[Any], task_id: str) -> list[Any]:
    return [i for i in items if (i.id if isinstance(i, Task) else i.task_id) == task_id]


async def test_follow_tasks_paints_then_follows_only_the_tagged_tasks(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        done = await client.submit("count", n=2, interval=0, tags=["user:42"])
        [s async for s in client.follow(done.id)]
        await client.submit("sleep", {"seconds": 0}, tags=["user:7"])
        await client.submit("count", n=2, interval=0)
        async with following(client.follow_tasks(tags=["user:42"])) as items:
            painted = await take(items, lambda got: len(got) == 1)
            assert [(t.id, t.state) for t in painted] == [(done.id, TaskState.SUCCEEDED)]
            assert painted[0].event_id, "a painted snapshot carries the cursor to resume from"
            # Submitted after the paint, before the stream opened: the cursor covers it.
            first = await client.submit("count", n=3, interval=0.01, tags=["user:42", "report/1"])
            await client.submit("count", n=3, interval=0, tags=["user:7"])
            got = await take(items, finished(first.id))
            # And one submitted while the stream is open.
            second = await client.submit("count", n=2, interval=0, tags=["user:42"])
            got += await take(items, finished(second.id))
    assert {t.id for t in got} == {first.id, second.id}
    for task in (first, second):
        snapshots = of(got, task.id)
        assert_in_order(snapshots)
        assert snapshots[0].state is TaskState.QUEUED  # nothing missed from the start
        assert snapshots[-1].state is TaskState.SUCCEEDED
    assert of(got, first.id)[-1].metadata == {"done": 3, "total": 3}
    assert of(got, first.id)[-1].tags == ("user:42", "report/1")


async def test_follow_tasks_with_output_yields_each_task_s_chunks_in_order(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        marker = await client.submit("sleep", {"seconds": 0}, tags=["words"])
        [s async for s in client.follow(marker.id)]
        early = await client.submit("generate", words=30, delay=0.02, tags=["words"])
        async with following(client.follow(early.id, output=True)) as own:
            await take(own, lambda got: sum(isinstance(i, OutputChunk) for i in got) >= 5)
        async with following(client.follow_tasks(tags=["words"], output=True)) as items:
            # Newest first: the running task (and the chunks its snapshot counts), the marker.
            # The chunks it wrote before the paint come first, from seq 0, whenever they are
            # found missing (at the latest, when its next chunk comes).
            got = await take(items, lambda got: any(i.id == marker.id for i in got if isinstance(i, Task)))
            assert isinstance(got[0], Task) and got[0].id == early.id
            assert [i.seq for i in got[1:-1]] == list(range(len(got) - 2))
            short = await client.submit("generate", words=20, delay=0.01, tags=["words"])
            long = await client.submit("generate", words=30, delay=0.01, tags=["words"])
            await client.submit("generate", words=10, delay=0, tags=["other"])
            done = [finished(task.id) for task in (early, short, long)]
            got += await take(items, lambda got: all(until(got) for until in done))
    ids = {i.id if isinstance(i, Task) else i.task_id for i in got}
    assert ids == {marker.id, early.id, short.id, long.id}
    assert_generated(of(got, early.id), 30)
    assert_generated(of(got, short.id), 20)
    assert_generated(of(got, long.id), 30)


async def test_follow_tasks_yields_the_snapshots_after_a_reset(server: LiveServer) -> None:
    async with AsyncClient(server.url) as client:
        gen = await client.submit("generate", words=12, delay=0, tags=["again"])
        [s async for s in client.follow(gen.id)]
        other = await client.submit("sleep", {"seconds": 0}, tags=["again"])
        [s async for s in client.follow(other.id)]
        await client.submit("sleep", {"seconds": 0}, tags=["elsewhere"])
        # An id from another server run: the server cannot resume, says reset and sends
        # the current snapshot of each selected task, oldest change first.
        resumed = client.follow_tasks(tags=["again"], output=True, last_event_id="another-run-7")
        async with following(resumed) as items:
            got = await take(items, lambda got: any(isinstance(i, Task) and i.id == other.id for i in got))
    assert [i.id for i in got if isinstance(i, Task)] == [gen.id, other.id]
    assert_generated(of(got, gen.id), 12)  # its output fetched whole, before its snapshot
    assert got[-1].state is TaskState.SUCCEEDED


def test_follow_tasks_by_ids_or_by_name(server: LiveServer) -> None:
    with Client(server.url) as client:
        first = client.submit("count", n=2, interval=0)
        list(client.follow(first.id))
        watched = client.submit("count", n=2, interval=0.01)
        slept = client.submit("sleep", {"seconds": 0})
        list(client.follow(slept.id))
        by_id = client.follow_tasks(task_ids=[first.id, watched.id])
        got = [next(by_id), next(by_id)]  # the paint: each id, in the order given
        assert [t.id for t in got] == [first.id, watched.id]
        while not (got[-1].terminal and got[-1].id == watched.id):
            got.append(next(by_id))
        by_id.close()  # type: ignore[attr-defined]
        assert {t.id for t in got} == {first.id, watched.id}
        assert got[-1].result == {"count": 2}
        by_name = client.follow_tasks(name="sleep", limit=1)
        assert next(by_name).id == slept.id
        late = client.submit("sleep", {"seconds": 0})
        rest = [next(by_name)]
        while not rest[-1].terminal:
            rest.append(next(by_name))
        by_name.close()  # type: ignore[attr-defined]
        assert {t.id for t in rest} == {late.id}
        with pytest.raises(NotFound):
            next(client.follow_tasks(task_ids=["no-such-task"]))


def test_follow_tasks_loses_and_repeats_nothing_when_the_stream_is_cut(
    make_hub: Any, live_server: Any
) -> None:
    server = live_server(make_hub(max_stream_lifetime=0.3))
    resumed_from: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.url.path == "/events":
            resumed_from.append(request.headers.get("last-event-id", ""))

    with httpx.Client(event_hooks={"request": [record]}) as http, Client(server.url, http=http) as client:
        marker = client.submit("generate", words=5, delay=0, tags=["cut"])
        list(client.follow(marker.id))
        items = client.follow_tasks(tags=["cut"], output=True)
        # A finished task: its snapshot, then the output it wrote before the paint.
        painted, *written = [next(items) for _ in range(6)]
        assert isinstance(painted, Task) and painted.id == marker.id and painted.terminal
        assert [(c.task_id, c.seq) for c in written] == [(marker.id, seq) for seq in range(5)]
        assert "".join(c.text for c in written) == generated_text(5)
        task = client.submit("generate", words=60, delay=0.02, tags=["cut"])
        got: list[Item] = []
        while not finished(task.id)(got):
            got.append(next(items))
        items.close()  # type: ignore[attr-defined]
    assert_generated(of(got, task.id), 60)
    assert of(got, marker.id) == []
    assert resumed_from[0] == painted.event_id  # the list's cursor
    assert len(resumed_from) >= 3, resumed_from  # 1.2 s or more of generation, 0.3 s streams
    chunk_ids = {i.event_id for i in got if isinstance(i, OutputChunk)}
    assert chunk_ids & set(resumed_from[1:]), "no stream was cut in the middle of the output"


async def test_follow_tasks_resumes_across_a_server_restart(restarting: HubBehindRestartingServer) -> None:
    resumed_from: list[str] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path == "/events":
            resumed_from.append(request.headers.get("last-event-id", ""))

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    async with http, AsyncClient(restarting.url, http=http, backoff=0.05, retries=100) as client:
        task = await client.submit("count", n=40, interval=0.05, tags=["restart"])
        got: list[Task] = []
        async with following(client.follow_tasks(tags=["restart"])) as items:
            async for snapshot in items:
                got.append(snapshot)
                if len(got) == 3:

                    def restart() -> None:
                        restarting.stop()
                        time.sleep(0.3)  # nobody listening: the client's reconnections fail
                        restarting.start()

                    await anyio.to_thread.run_sync(restart)
                if snapshot.terminal:
                    break
    assert len(resumed_from) >= 2, resumed_from
    assert resumed_from[-1] in [s.event_id for s in got]
    assert {s.id for s in got} == {task.id}
    # The painted snapshot (no event of its own), then each change once, in order.
    assert_in_order(got[1:])
    assert got[-1].result == {"count": 40}
    assert got[-1].metadata == {"done": 40, "total": 40}


SECRET = "a long random secret for the tag tokens"


async def test_a_tag_token_follows_its_tag_and_nothing_else(make_hub: Any, live_server: Any) -> None:
    server = live_server(make_hub(tokens=SECRET))
    tokens = TaskTokens(SECRET)
    async with (
        AsyncClient(server.url) as anyone,
        AsyncClient(server.url, params={"token": tokens.issue_tag("user:42")}) as page,
        AsyncClient(server.url, headers={"Authorization": f"Bearer {tokens.issue_tag('user:7')}"}) as other,
    ):
        mine = await anyone.submit("count", n=1, interval=0, tags=["user:42"])
        [s async for s in page.follow(mine.id)]
        async with following(page.follow_tasks(tags=["user:42"])) as items:
            painted = await take(items, lambda got: len(got) == 1)
            assert [(t.id, t.state) for t in painted] == [(mine.id, TaskState.SUCCEEDED)]
            # Another tag's task runs to its end before the next one of ours starts.
            theirs = await anyone.submit("count", n=2, interval=0, tags=["user:7"])
            assert [s.state async for s in other.follow(theirs.id)][-1] is TaskState.SUCCEEDED
            later = await anyone.submit("count", n=2, interval=0, tags=["user:42"])
            got = await take(items, finished(later.id))
        assert {t.id for t in got} == {later.id}
        assert_in_order(got)
        with pytest.raises(NotFound):
            await page.get(theirs.id)
        assert await page.list(tags=["user:7"]) == []
        assert await anyone.list(tags=["user:42"]) == []  # no token: nothing
        with pytest.raises(NotFound):  # a per-task stream of another tag's task
            [s async for s in page.follow(theirs.id)]


SNAPSHOT = '{"id": "T1", "name": "sleep", "state": "running", "created_at": "2026-01-01T00:00:00Z"}'
#: Streams that send events and end, but move the client nowhere: the same snapshot
#: again, or a reset with nothing after it.
GOING_NOWHERE = {
    "same snapshot": f"id: e1\nevent: task.running\ndata: {SNAPSHOT}\n\n",
    "reset only": 'event: reset\ndata: {"reason": "history gone"}\n\n',
}


def going_nowhere(body: str) -> tuple[httpx.MockTransport, list[str]]:
    """A server whose every stream is ``body``; the paths it was asked for."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/tasks":
            return httpx.Response(200, json={"tasks": [], "cursor": "c0"})
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})

    return httpx.MockTransport(answer), asked


@pytest.mark.parametrize("body", GOING_NOWHERE.values(), ids=GOING_NOWHERE.keys())
async def test_streams_that_move_nothing_are_failures_with_backoff(body: str) -> None:
    """A stream that ends after events is resumed at once only if it moved the cursor;
    else it counts against ``retries``, with backoff, like a dropped connection."""
    for follow in ("follow", "follow_tasks"):
        transport, asked = going_nowhere(body)
        async with httpx.AsyncClient(transport=transport) as http:
            client = AsyncClient("http://t", http=http, retries=2, backoff=0.001)
            items = client.follow("T1") if follow == "follow" else client.follow_tasks(tags=["a"])
            with pytest.raises(ConnectionFailed, match="after 2 retries"):
                [item async for item in items]
        streams = [path for path in asked if path != "/tasks"]
        assert 3 <= len(streams) <= 4, (follow, asked)  # the first may move it; then 3 tries
        transport, asked = going_nowhere(body)
        with httpx.Client(transport=transport) as sync_http:
            sync = Client("http://t", http=sync_http, retries=2, backoff=0.001)
            with pytest.raises(ConnectionFailed, match="after 2 retries"):
                list(sync.follow("T1") if follow == "follow" else sync.follow_tasks(tags=["a"]))
        assert 3 <= len([path for path in asked if path != "/tasks"]) <= 4, (follow, asked)


def answering(status: int, body: bytes, **headers: str) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body, headers=headers))


ILL_TYPED = {
    "progress as text": {"progress": "abc"},
    "progress NaN": {"progress": float("nan")},
    "created_at a number": {"created_at": 5},
    "finished_at not a time": {"finished_at": "garbage"},
    "error a list": {"error": ["x"]},
    "tags a string": {"tags": "abc"},
    "output_chunks negative": {"output_chunks": -1},
}


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (200, b"<html>hello</html>", {}),
        (200, b"[1, 2, 3]", {}),
        (200, b'{"name": "x"}', {}),
        (
            200,
            b'{"id": "T1", "name": "\\udfff", "state": "queued", "created_at": "2026-01-01T00:00:00Z"}',
            {},
        ),
        (200, b"[" * 100_000, {}),
        (204, b"", {}),
        (302, b"", {"Location": "http://elsewhere/next"}),
        *[
            (200, json.dumps({**json.loads(SNAPSHOT), **fields}).encode(), {})
            for fields in ILL_TYPED.values()
        ],
    ],
)
def test_answers_that_are_not_the_api_s_raise_api_error(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    with httpx.Client(transport=answering(status, body, **headers)) as http:
        client = Client("http://t", http=http, retries=0)
        for call in (lambda: client.get("T1"), lambda: client.submit("sleep"), client.list):
            with pytest.raises(APIError) as raised:
                call()
            assert "\x1b" not in raised.value.message


def test_a_server_s_error_message_is_one_line_shown_as_sent() -> None:
    body = json.dumps({"error": {"code": "bad", "message": "line one\nline two \x1b[2J"}}).encode()
    with httpx.Client(transport=answering(418, body)) as http, pytest.raises(APIError) as raised:
        Client("http://t", http=http).get("T1")
    assert "\n" not in raised.value.message and "\x1b" not in raised.value.message
    assert "line one\\x0aline two \\x1b[2J" in raised.value.message


async def test_a_stream_that_sends_another_task_is_refused() -> None:
    other = SNAPSHOT.replace('"T1"', '"OTHER"')
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200,
            text=f"id: e1\nevent: task.running\ndata: {other}\n\n",
            headers={"Content-Type": "text/event-stream"},
        )
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(APIError, match="sent an event of task 'OTHER'"):
            [item async for item in AsyncClient("http://t", http=http).follow("T1")]


def test_messages_never_show_a_password_from_the_url() -> None:
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"
    with Client(url, retries=0, backoff=0.001) as client:
        assert client.shown_url.startswith("http://user:***@127.0.0.1:")
        for call in (lambda: client.get("T1"), lambda: list(client.follow("T1"))):
            with pytest.raises(ConnectionFailed) as failed:
                call()
            assert "hunter2" not in failed.value.message and "user:***@" in failed.value.message
