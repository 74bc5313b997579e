"""A 503 means never: a task the hub refused does not run and does not appear, even when
its message reaches Celery's broker after all; and a send that failed after a worker took
the task is answered 202 with it.

The hub sends through a TCP proxy in front of Celery's Redis that can hold what passes
through it (a network that stalls, or loses replies); the worker reads Celery's Redis
directly. Real redis-server, real ``celery worker``, real uvicorn.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from _support import SSEEvent, collect, sse_events, task_events

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio

TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}
WAIT = 30.0
SEND_TIMEOUT = 2.0


class _Pair:
    """One client connection and its connection to the target, with what waits to pass."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.to_upstream, self.to_client = bytearray(), bytearray()
        self.client_open = self.upstream_open = True


class HoldingProxy:
    """A TCP proxy on a loopback port in front of ``host:port``. ``hold()`` keeps what
    passes (requests, replies, or both) instead of forwarding it, until ``release()``:
    what a client sent while held still arrives, late, even if the client has given up
    and closed its connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests_held = self.replies_held = False
        self._pairs: list[_Pair] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def hold(self, *, requests: bool = True, replies: bool = True) -> None:
        self.requests_held, self.replies_held = requests, replies

    def release(self) -> None:
        self.requests_held = self.replies_held = False

    @property
    def open_clients(self) -> int:
        return sum(pair.client_open for pair in list(self._pairs))

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.02):
                    if key.data is None:
                        client, _ = self.sock.accept()
                        pair = _Pair(client, socket.create_connection(self.target))
                        self._pairs.append(pair)
                        selector.register(pair.client, selectors.EVENT_READ, (pair, True))
                        selector.register(pair.upstream, selectors.EVENT_READ, (pair, False))
                    else:
                        pair, from_client = key.data
                        self._read(selector, pair, from_client)
                for pair in list(self._pairs):
                    self._flush(selector, pair)
            for pair in self._pairs:
                pair.client.close()
                pair.upstream.close()
            self.sock.close()

    def _read(self, selector: selectors.BaseSelector, pair: _Pair, from_client: bool) -> None:
        sock = pair.client if from_client else pair.upstream
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            (pair.to_upstream if from_client else pair.to_client).extend(data)
            return
        selector.unregister(sock)
        sock.close()
        if from_client:
            pair.client_open = False  # what it sent is still forwarded, once released
        else:
            pair.upstream_open = False

    def _flush(self, selector: selectors.BaseSelector, pair: _Pair) -> None:
        if pair.to_upstream and pair.upstream_open and not self.requests_held:
            pair.upstream.sendall(pair.to_upstream)
            pair.to_upstream.clear()
        if pair.to_client and pair.client_open and not self.replies_held:
            try:
                pair.client.sendall(pair.to_client)
            except OSError:
                pass
            pair.to_client.clear()
        if not pair.client_open and not pair.to_upstream and pair.upstream_open:
            selector.unregister(pair.upstream)
            pair.upstream.close()
            pair.upstream_open = False
        if not pair.upstream_open and pair.client_open:
            selector.unregister(pair.client)
            pair.client.close()
            pair.client_open = False
        if not pair.client_open and not pair.upstream_open:
            self._pairs.remove(pair)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def proxy(celery_urls: dict[str, str]) -> Iterator[HoldingProxy]:
    """A proxy in front of Celery's Redis."""
    parts = urlsplit(celery_urls["CELERY_BROKER_URL"])
    holding = HoldingProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        yield holding
    finally:
        holding.close()


def proxied_app(port: int, db: str) -> Any:
    """A Celery app with the test app's ``add`` and ``touch`` (by name), whose broker is the
    proxy: the hub sends through it, the worker (``tasks_app``) runs them."""
    from celery import Celery

    url = f"redis://127.0.0.1:{port}/{db}"
    # Celery prefers $CELERY_BROKER_URL to `broker=`; the write URL (what sends use) is
    # the app's own setting when there is one.
    app = Celery("proxied", broker=url, broker_write_url=url, set_as_current=False)

    @app.task(name="add", shared=False)
    def add(a: int, b: int = 1) -> int:  # pragma: no cover - runs on the worker
        return a + b

    @app.task(name="touch", shared=False)
    def touch(marker: str) -> str:  # pragma: no cover - runs on the worker
        return marker

    return app


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` (a log, a file, the proxy) until true, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


async def follow(http: httpx.AsyncClient, task_id: str) -> list[SSEEvent]:
    with anyio.fail_after(WAIT):
        response, events = await collect(
            http, f"/tasks/{task_id}/events", until=lambda e: e.event in TERMINAL
        )
    assert response.status_code == 200, response.text
    return task_events(events)


@pytest.fixture
def proxied_hub(
    proxy: HoldingProxy, celery_urls: dict[str, str], redis_db: int, celery_db: None, live_server: Any
) -> Iterator[Any]:
    """A hub whose Celery sends go through the proxy (``send_timeout`` 2 s), served."""
    from sse_tasks.celery import CeleryExecutor

    db = urlsplit(celery_urls["CELERY_BROKER_URL"]).path.strip("/") or "0"
    app = proxied_app(proxy.port, db)
    executor = CeleryExecutor(app, send_timeout=SEND_TIMEOUT)
    try:
        yield live_server(TaskHub(celery_urls["SSE_TASKS_BROKER"], executor=executor))
    finally:
        app.close()


async def test_a_refused_task_that_reaches_the_worker_late_is_discarded_unrun(
    proxy: HoldingProxy, proxied_hub: Any, celery_worker: Any, tmp_path: Path
) -> None:
    worker = celery_worker("solo", concurrency=1)
    marker = tmp_path / "ran"
    async with httpx.AsyncClient(base_url=proxied_hub.url, timeout=WAIT) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        async with http.stream("GET", "/events", params={"last_event_id": cursor}) as stream:
            assert stream.status_code == 200
            seen: list[SSEEvent] = []
            events = sse_events(stream).__aiter__()

            async def read_until(task_id: str) -> None:
                with anyio.fail_after(WAIT):
                    while True:
                        event = await events.__anext__()
                        if event.event and event.event.startswith("task."):
                            seen.append(event)
                            if event.event in TERMINAL and event.json()["id"] == task_id:
                                return

            # A first send opens the hub's connection to Celery's broker.
            first = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
            assert first.status_code == 202, first.text
            await read_until(first.json()["id"])

            proxy.hold()  # the network stalls: what the hub sends now waits in the proxy
            started = time.monotonic()
            refused = await http.post("/tasks", json={"name": "touch", "params": {"marker": str(marker)}})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "executor_unavailable"
            assert time.monotonic() - started < SEND_TIMEOUT + 2
            # No send is left hanging: the hub gave up and closed its connections ...
            wait_until(lambda: proxy.open_clients == 0, "the hub's sends to give up")
            proxy.release()  # ... but what it sent still arrives: the message is delivered late
            worker.wait_for("was refused by the hub (503); discarded", timeout=WAIT)
            discarded = re.findall(r"task (\S+) was refused by the hub \(503\); discarded", worker.text())
            received = re.findall(r"touch\[([^\]]+)\] received", worker.text())
            assert received and set(discarded) == set(received), (received, discarded)
            refused_id = received[0]

            # The worker is past it: a task sent after it runs.
            after = await http.post("/tasks", json={"name": "add", "params": {"a": 2}})
            assert after.status_code == 202, after.text
            await read_until(after.json()["id"])
        assert not marker.exists()  # the task body never ran
        assert refused_id not in {event.json()["id"] for event in seen}
        assert (await http.get(f"/tasks/{refused_id}")).status_code == 404
        listed = (await http.get("/tasks")).json()["tasks"]
        assert [task["id"] for task in listed] == [after.json()["id"], first.json()["id"]]
    assert f"touch[{refused_id}] succeeded" not in worker.text()


async def test_a_send_that_fails_after_the_worker_took_the_task_is_answered_202_with_it(
    proxy: HoldingProxy,
    proxied_hub: Any,
    celery_worker: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The message reaches Celery's broker, its reply is lost: the hub's send fails, but a
    worker has already stored the task, so the answer is 202 (the work is under way)."""
    caplog.set_level(logging.WARNING, logger="sse_tasks.celery")
    celery_worker("threads", concurrency=1)
    marker = tmp_path / "ran"
    async with httpx.AsyncClient(base_url=proxied_hub.url, timeout=WAIT) as http:
        first = await http.post("/tasks", json={"name": "add", "params": {"a": 1}})
        assert first.status_code == 202, first.text
        assert (await follow(http, first.json()["id"]))[-1].event == "task.succeeded"

        proxy.hold(requests=False)  # requests pass, replies are lost
        posted = await http.post("/tasks", json={"name": "touch", "params": {"marker": str(marker)}})
        assert posted.status_code == 202, posted.text
        task_id = posted.json()["id"]
        failed_sends = [
            r.getMessage() for r in caplog.records if "but a worker has it already" in r.getMessage()
        ]
        assert failed_sends and task_id in failed_sends[0], failed_sends  # the send did fail
        assert posted.headers["location"].endswith(f"/tasks/{task_id}")
        assert posted.json()["state"] in ("queued", "running", "succeeded")
        proxy.release()
        events = await follow(http, task_id)
        assert events[-1].event == "task.succeeded", [e.event for e in events]
        assert marker.read_text() == "ran"
        assert [task["id"] for task in (await http.get("/tasks")).json()["tasks"]] == [
            task_id,
            first.json()["id"],
        ]
