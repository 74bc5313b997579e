"""The worker side's writers send commands straight over redis-py connections
(``sse_tasks.brokers.redis.wire``): every kind of argument, error replies in place, a
restarted Redis, a forked child, against a real redis-server, blocking and asyncio alike."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.to_thread
import pytest
from _redis import RedisServer
from _support import wait_until

from sse_tasks import Task, TaskState
from sse_tasks._core.models import utcnow
from sse_tasks.brokers.redis import RedisBroker
from sse_tasks.brokers.redis.keys import Keys
from sse_tasks.brokers.redis.wire import AsyncWire, Wire
from sse_tasks.engines import SyncWriter

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.anyio

#: A batch with a ``str`` (not ASCII), ``bytes`` (not UTF-8), an ``int``, a ``float``, a
#: command of two words, and an error reply between answers.
BATCH: list[tuple[Any, ...]] = [
    ("SET", "k", "välue"),
    ("GET", "k"),
    ("ZADD", "z", 1.5, "a"),
    ("ZSCORE", "z", "a"),
    ("HSET", "h", "x", b"\x00\xff", "y", 7),
    ("HGETALL", "h"),
    ("INCR", "h"),  # WRONGTYPE: its error is its reply
    ("CONFIG", "GET", "maxmemory"),
    ("INCR", "n"),
]


def _check(replies: list[Any]) -> None:
    assert replies[:3] == [b"OK", "välue".encode(), 1] and replies[4] == 2
    assert float(replies[3]) == 1.5  # RESP3 (redis-py's default) answers a double, RESP2 bytes
    pairs = replies[5]
    fields = pairs if isinstance(pairs, dict) else dict(zip(pairs[::2], pairs[1::2], strict=True))
    assert fields == {b"x": b"\x00\xff", b"y": b"7"}
    assert isinstance(replies[6], redis.exceptions.ResponseError) and "WRONGTYPE" in str(replies[6])
    assert b"maxmemory" in replies[7] and replies[8] == 1


@pytest.fixture
def server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


def test_a_batch_is_answered_in_order_with_error_replies_in_place(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        _check(wire.send(BATCH))
        assert wire.send([("CLIENT", "GETNAME")]) == [b"sse-tasks-test"]
    finally:
        wire.close()


async def test_the_asyncio_wire_answers_the_same(server: RedisServer) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test")
    try:
        _check(await wire.send(BATCH))
        assert await wire.send([("CLIENT", "GETNAME")]) == [b"sse-tasks-test"]
    finally:
        await wire.close()


def test_a_connection_a_restart_closed_is_replaced_and_an_outage_raises(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        assert wire.send([("SET", "k", 1)]) == [b"OK"]
        server.stop(save=False)
        with pytest.raises(redis.exceptions.ConnectionError):
            wire.send([("GET", "k")])
        server.start()
        assert wire.send([("SET", "k", 2)]) == [b"OK"]  # its idle connection was closed
        server.stop(save=False)
        server.start()
        assert wire.send([("GET", "k")]) == [None]  # replaced once, sent again
    finally:
        wire.close()


async def test_the_asyncio_wire_replaces_a_connection_a_restart_closed(server: RedisServer) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test")
    try:
        assert await wire.send([("SET", "k", 1)]) == [b"OK"]
        server.stop(save=False)
        with pytest.raises(redis.exceptions.ConnectionError):
            await wire.send([("GET", "k")])
        server.start()
        server.stop(save=False)
        server.start()
        assert await wire.send([("GET", "k")]) == [None]
    finally:
        await wire.close()


def _blocked(server: RedisServer, count: int) -> None:
    """Wait until ``count`` clients block on ``go``, then let them go."""
    with server.client() as client:
        deadline = time.monotonic() + 10
        while client.info("clients")["blocked_clients"] < count:
            assert time.monotonic() < deadline, "the batches never blocked"
            time.sleep(0.01)
        client.rpush("go", *range(count))


def _named(server: RedisServer) -> int:
    with server.client() as client:
        return sum(1 for c in client.client_list() if c["name"] == "sse-tasks-test")


def test_after_a_restart_every_idle_connection_is_replaced_at_once(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        with ThreadPoolExecutor(3) as pool:  # three batches at once: three idle connections
            sent = [pool.submit(wire.send, [("BLPOP", "go", 10)]) for _ in range(3)]
            _blocked(server, 3)
            assert all(f.result()[0] is not None for f in sent)
        assert _named(server) == 3
        server.stop(save=False)
        server.start()
        assert wire.send([("PING",)]) == [b"PONG"]  # on a new one, not the next dead one
        assert wire.send([("PING",)]) == [b"PONG"]
    finally:
        wire.close()


async def test_the_asyncio_wire_replaces_every_idle_connection_after_a_restart(server: RedisServer) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test")
    try:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(wire.send, [("BLPOP", "go", 10)])
            await anyio.to_thread.run_sync(_blocked, server, 3)
        assert _named(server) == 3
        server.stop(save=False)
        server.start()
        assert await wire.send([("PING",)]) == [b"PONG"]
    finally:
        await wire.close()


async def test_a_batch_waits_for_a_free_connection_for_the_timeout_at_most(server: RedisServer) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test", limit=1, timeout=0.2)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(wire.send, [("BLPOP", "nothing", 2)])  # holds the only one
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(redis.exceptions.ConnectionError, match="no Redis connection free"):
                await wire.send([("PING",)])
            group.cancel_scope.cancel()
        assert await wire.send([("PING",)]) == [b"PONG"]  # the cancelled one gave it back
    finally:
        await wire.close()


async def test_a_batch_not_answered_within_the_timeout_raises_and_its_connection_is_dropped(
    server: RedisServer,
) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test", reply_timeout=0.2)
    try:
        assert await wire.send([("PING",)]) == [b"PONG"]  # one idle connection
        with pytest.raises(redis.exceptions.TimeoutError, match=r"did not answer within 0\.2 s"):
            await wire.send([("BLPOP", "nothing", 5)])
        # On the same connection this would read BLPOP's late nil as its own answer.
        assert await wire.send([("PING",)]) == [b"PONG"]
    finally:
        await wire.close()


def _in_child(body: Callable[[], bytes]) -> bytes:
    """What ``body`` returns in a forked child, which then exits at once (no cleanup, as a
    work horse ends)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, body())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        out = answer.read()
    os.waitpid(pid, 0)
    return out


def _client_id(wire: Wire, adopt: bool) -> Callable[[], bytes]:
    def body() -> bytes:
        if adopt:
            wire.adopt()
        return str(wire.send([("CLIENT", "ID")])[0]).encode()

    return body


def test_a_forked_child_opens_connections_of_its_own(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        [parent_id] = wire.send([("CLIENT", "ID")])
        assert int(_in_child(_client_id(wire, adopt=False))) != parent_id
        assert wire.send([("CLIENT", "ID")]) == [parent_id]  # the parent's still works
    finally:
        wire.close()


def test_a_child_forked_while_another_thread_held_the_lock_still_sends(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        assert wire.send([("PING",)]) == [b"PONG"]
        read, write = os.pipe()
        with wire._lock:  # as a keeper thread of the parent may hold it when a pool forks
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os.write(write, wire.send([("PING",)])[0])
                finally:
                    os._exit(0)
        os.close(write)
        answered, _, _ = select.select([read], [], [], 10)  # a deadlocked child never answers
        if not answered:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        answer = os.read(read, 100) if answered else b""
        os.close(read)
        assert answer == b"PONG"
    finally:
        wire.close()


def test_a_child_adopts_the_connection_its_parent_lent_which_comes_back(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        [before] = wire.send([("CLIENT", "ID")])
        assert wire.lend()
        with pytest.raises(RuntimeError):
            wire.lend()  # one child at a time
        assert int(_in_child(_client_id(wire, adopt=True))) == before  # no connect in the child
        wire.reclaim()
        assert wire.send([("CLIENT", "ID")]) == [before]
        assert int(_in_child(_client_id(wire, adopt=True))) != before  # not lent: its own
    finally:
        wire.close()


def test_only_the_child_that_adopts_a_lent_connection_uses_it(server: RedisServer) -> None:
    """A child that does not adopt it (one a job forks, or any child of a parent that lent
    but never forked a horse), and a child of the child that did, open their own."""
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        [before] = wire.send([("CLIENT", "ID")])
        wire.lend()
        assert int(_in_child(_client_id(wire, adopt=False))) != before

        def adopts_then_forks() -> bytes:
            wire.adopt()
            return _in_child(_client_id(wire, adopt=True)) + b" " + _client_id(wire, adopt=False)()

        grandchild, child = map(int, _in_child(adopts_then_forks).split())
        assert child == before and grandchild != before
        wire.reclaim()
        assert wire.send([("CLIENT", "ID")]) == [before]
    finally:
        wire.close()


def test_a_lent_connection_a_child_left_mid_round_trip_is_closed(server: RedisServer) -> None:
    """A child that ends between sending and reading (killed mid-write) leaves a reply
    unread: the parent must not read it as the answer to its own next command."""
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        [before] = wire.send([("CLIENT", "ID")])
        wire.lend()

        def sends_and_dies() -> bytes:
            wire.adopt()
            connection, _ = wire._take()
            connection.send_command("ECHO", "the child's")
            return b"sent"

        assert _in_child(sends_and_dies) == b"sent"
        wire.reclaim()
        assert wire.send([("ECHO", "the parent's")]) == [b"the parent's"]
        [after] = wire.send([("CLIENT", "ID")])
        assert after != before
        with redis.Redis.from_url(server.url) as client:  # closed, not leaked
            wait_until(lambda: str(before) not in [c["id"] for c in client.client_list()], "closed", 10)
    finally:
        wire.close()


def test_a_parent_that_stops_waiting_leaves_the_lent_connection_to_its_child(server: RedisServer) -> None:
    """``reclaim(child_alive=True)`` (the worker gave up on a horse that may still run)
    closes the parent's copy only: the child's connection keeps working."""
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        [before] = wire.send([("CLIENT", "ID")])
        wire.lend()
        to_child, from_parent = os.pipe()
        from_child, to_parent = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                wire.adopt()
                os.write(to_parent, b"adopted")
                os.read(to_child, 1)  # the parent has let go
                os.write(to_parent, str(wire.send([("CLIENT", "ID")])[0]).encode())
            finally:
                os._exit(0)
        assert os.read(from_child, 100) == b"adopted"
        wire.reclaim(child_alive=True)
        os.write(from_parent, b"x")
        answer = os.read(from_child, 100)
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, from_child, to_parent):
            os.close(fd)
        assert int(answer) == before  # the child went on on the same connection
        assert wire.send([("CLIENT", "ID")]) != [before]  # the parent's next is new
    finally:
        wire.close()


def test_a_tls_connection_is_never_lent() -> None:
    """A TLS session's state lives in the process that used it last: the child opens its own."""
    wire = Wire("rediss://127.0.0.1:1/0", {}, "sse-tasks-test")
    assert wire.lend() is False
    wire.reclaim()  # nothing lent: nothing to do


def test_a_writer_loads_the_scripts_redis_lost(server: RedisServer) -> None:
    writer = SyncWriter(RedisBroker(server.url))
    try:
        assert writer.create(Task(id="a", name="n")) is not None
        writer.wire.send([("SCRIPT", "FLUSH")])
        stored = writer.create(Task(id="b", name="n"))
        assert stored is not None and stored.event_id and writer.state("b") == "queued"
    finally:
        writer.close()


def test_a_posted_batch_is_answered_before_its_connection_is_used_again(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        wire.post([("SET", "k", 1), ("INCR", "k")])
        assert wire.send([("GET", "k")]) == [b"2"]  # its replies were read first, in order
        wire.post([("INCR", "k")])
        wire.settle()  # read them while idle: nothing is left owed
        assert wire.send([("GET", "k")]) == [b"3"]
    finally:
        wire.close()


def test_a_posted_batch_whose_connection_fails_unanswered_is_sent_again(server: RedisServer) -> None:
    broker = RedisBroker(server.url)
    writer = SyncWriter(broker)
    client = server.client()
    try:
        writer.create(Task(id="a", name="n"))
        done = Task(id="a", name="n", state=TaskState.SUCCEEDED, finished_at=utcnow())
        client.client_pause(5000, all=False)  # writes wait: the posted one is not run
        writer.final(done, wait=False, retry_for=30)
        wait_until(lambda: any(c["cmd"] == "evalsha" for c in client.client_list()), "the write waits")
        client.client_kill_filter(_type="normal", skipme=True)  # dropped unanswered
        client.client_unpause()
        writer.settle()
        assert writer.state("a") == "succeeded"
        assert client.xlen(Keys(broker.key_prefix).events) == 2  # queued, succeeded: once
    finally:
        client.close()
        writer.close()


@pytest.mark.parametrize("retry_for", [60.0, 0.0])
def test_posted_batches_redis_cannot_take_wait_until_their_deadline(
    server: RedisServer, caplog: pytest.LogCaptureFixture, retry_for: float
) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        wire.send([("PING",)])
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # it reads nothing more, answers nothing
        wire.post([("SET", "k", 1)], retry_for=retry_for)
        server.proc.kill()  # gone without answering
        server.proc.wait(10)
        with pytest.raises(redis.exceptions.ConnectionError):
            wire.settle()
        dropped = "dropped: Redis unreachable past their deadline" in caplog.text
        assert dropped is (retry_for == 0)
        server.start()
        wire.settle()
        assert wire.send([("GET", "k")]) == [None if retry_for == 0 else b"1"]
    finally:
        wire.close()


async def test_the_asyncio_wire_posts_the_same(server: RedisServer) -> None:
    wire = AsyncWire(server.url, {}, "sse-tasks-test", limit=1)
    try:
        await wire.post([("SET", "k", 1), ("INCR", "k")])
        assert await wire.send([("GET", "k")]) == [b"2"]  # answered first, on the one connection
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # it reads nothing more, answers nothing
        await wire.post([("INCR", "k")], retry_for=60)  # the kernel takes it all the same
        server.proc.kill()  # gone without answering it
        server.proc.wait(10)
        with pytest.raises(redis.exceptions.ConnectionError):
            await wire.settle()
        server.start()  # empty: the write that was lost is sent again, alone
        await wire.settle()
        assert await wire.send([("GET", "k")]) == [b"1"]
    finally:
        await wire.close()


def test_a_posted_script_redis_lost_is_loaded_and_sent_again(server: RedisServer) -> None:
    writer = SyncWriter(RedisBroker(server.url))
    try:
        writer.create(Task(id="a", name="n"))
        writer.wire.send([("SCRIPT", "FLUSH")])
        writer.final(Task(id="a", name="n", state=TaskState.FAILED, finished_at=utcnow()), wait=False)
        writer.settle()
        assert writer.state("a") == "failed"
    finally:
        writer.close()


def test_a_lent_connection_is_never_left_owing_replies(server: RedisServer) -> None:
    wire = Wire(server.url, {}, "sse-tasks-test")
    try:
        wire.post([("SET", "k", 1)])
        assert wire.lend()  # the connection that owed the reply, answered first
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            wire.adopt()
            wire.post([("INCR", "k")])  # waits for its answer on the lent connection
            os._exit(0)
        os.waitpid(pid, 0)
        wire.reclaim()
        assert wire.send([("GET", "k")]) == [b"2"]  # the lent one came back clean, reused
    finally:
        wire.close()


class RecordingServer:
    """A stand-in for Redis on a loopback port that answers ``+OK`` (``PING``: ``+PONG``) and
    records the name of every command it receives."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0?protocol=2"
        self.commands: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError), connection.makefile("rb") as lines:
            while header := lines.readline():
                words = []
                for _ in range(int(header[1:])):
                    size = int(lines.readline()[1:])
                    words.append(lines.read(size + 2)[:-2].decode())
                self.commands.append(" ".join(words[:2]).upper())
                connection.sendall(b"+PONG\r\n" if words[0].upper() == "PING" else b"+OK\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


def test_a_connection_is_named_but_sends_no_client_setinfo(recording: RecordingServer) -> None:
    """``CLIENT SETINFO`` costs a round trip and a read of redis-py's metadata on every
    connect: in a worker that forks a child per task, each child pays it."""
    wire = Wire(recording.url, {}, "sse-tasks-test-worker")
    assert wire.send([("PING",)]) == [b"PONG"]
    wire.close()
    assert recording.commands == ["CLIENT SETNAME", "PING"]


async def test_an_asyncio_connection_is_named_but_sends_no_client_setinfo(recording: RecordingServer) -> None:
    wire = AsyncWire(recording.url, {}, "sse-tasks-test-worker")
    assert await wire.send([("PING",)]) == [b"PONG"]
    await wire.close()
    assert recording.commands == ["CLIENT SETNAME", "PING"]
