"""Test helpers: a real uvicorn server in a thread, an SSE reader over raw lines,
submitting over HTTP, bounded waits, in-process clients, and worker processes."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import uvicorn

from sse_tasks import Task, TaskHub
from sse_tasks._core import codec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ports import free_port

#: The loop each hub served by :func:`serve_in_thread` runs on (see :func:`finished`).
_SERVED_ON: weakref.WeakKeyDictionary[TaskHub, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


@dataclass
class LiveServer:
    """A uvicorn server on a loopback port, running ``app`` in its own thread and loop."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (e.g. ``hub.shutdown()``) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


#: ``make_hub(**options)`` and ``live_server(hub, app=None)`` (fixtures in conftest.py).
HubFactory = Callable[..., TaskHub]
ServerFactory = Callable[..., LiveServer]


@contextmanager
def serve_in_thread(app: Any, hub: TaskHub | None = None, **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1; on exit stop the server the way a signal would, which
    the hub (told of its server) sees: it ends its tasks and streams, then the server exits."""
    port = free_port()
    cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config)
    server = uvicorn.Server(cfg)
    if hub is not None:
        hub.stop_with(server)  # in a thread, uvicorn installs no signal handler to find it by
    live = LiveServer(f"http://127.0.0.1:{port}", server, threading.Thread(target=lambda: None))

    def run() -> None:
        loop = asyncio.new_event_loop()
        live.loop = loop
        if hub is not None:
            _SERVED_ON[hub] = loop
        loop.run_until_complete(server.serve())
        # Whatever an app left running on the loop is ended before the loop is closed.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:  # gather() of nothing needs a current loop, which this thread has not
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    live.thread = threading.Thread(target=run, daemon=True)
    live.thread.start()
    for _ in range(500):
        if server.started:
            break
        if not live.thread.is_alive():
            raise RuntimeError("server failed to start")
        threading.Event().wait(0.01)
    else:
        raise RuntimeError("server did not start in 5 s")
    try:
        yield live
    finally:
        server.should_exit = True  # what uvicorn's SIGTERM handler sets
        live.thread.join(30)


@dataclass
class SSEEvent:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """Parse an SSE body strictly by the spec's line rules (comments kept for assertions)."""
    current = SSEEvent()
    data_lines: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                current.data = "\n".join(data_lines)
                yield current
            current, data_lines, touched = SSEEvent(), [], False
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            touched = True
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        touched = True
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "retry":
            current.retry = int(value)


async def collect(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    until: Any = None,
    limit: int = 10_000,
) -> tuple[httpx.Response, list[SSEEvent]]:
    """Read ``url``'s stream until it ends, ``until(event)`` is true, or ``limit`` events."""
    events: list[SSEEvent] = []
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response, events
        async for event in sse_events(response):
            if event.event is None and event.data == "" and not event.comments and event.retry:
                events.append(event)
                continue
            events.append(event)
            if until is not None and until(event):
                break
            if len(events) >= limit:
                break
    return response, events


def task_events(events: list[SSEEvent]) -> list[SSEEvent]:
    """Only the events that carry a snapshot (``task.*`` but ``task.output``; no retry/ping/reset)."""
    return [e for e in events if e.event and e.event.startswith("task.") and e.event != "task.output"]


def with_routes(hub: TaskHub, routes: Any) -> Any:
    """``hub.app`` at the root behind ``routes`` of another app, run by the hub's lifespan."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[*routes, Mount("/", hub.app)], lifespan=hub.lifespan)


#: The repository's root (the checkout the tests run from).
ROOT = Path(__file__).resolve().parent.parent


# -- submitting and waiting ----------------------------------------------------------


async def submit(
    http: httpx.AsyncClient, name: str, /, *, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, Any]:
    """``POST /tasks`` of ``name`` with ``params``; the snapshot of the 202 (anything else fails)."""
    response = await http.post("/tasks", json={"name": name, "params": params}, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def submit_sync(base_url: str, name: str, /, **params: Any) -> dict[str, Any]:
    """:func:`submit` for code without an event loop, against the hub at ``base_url``."""
    response = httpx.post(f"{base_url}/tasks", json={"name": name, "params": params}, timeout=30)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0, *, interval: float = 0.02) -> Any:
    """Poll ``condition`` (plain or async) until it is true, for a state the server signals
    no event for (a stream count, a key in Redis); its value. Fails after ``timeout``."""
    with anyio.fail_after(timeout):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await anyio.sleep(interval)


def redis_db(url: str, db: int) -> str:
    """The Redis URL ``url`` on database ``db`` (its query dropped)."""
    return url.partition("?")[0].rsplit("/", 1)[0] + f"/{db}"


def answers(url: str) -> bool:
    """True if a GET of ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 15.0,
    *,
    details: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> Any:
    """:func:`wait_for` for code without an event loop (a file, a log, a process list);
    its value. The failure names ``what`` was awaited, then ``details()`` (e.g. logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{more}")
        time.sleep(interval)


async def finished(hub: TaskHub, task_id: str, timeout: float = 20.0) -> Task:
    """The task's terminal snapshot, awaited on the hub's own event log (the way the hub
    itself hears of every change, whichever process made it). Read from the log, not
    ``hub.get``, so a task that expires as it ends is seen too.

    The log wakes its waiters on the loop that serves the hub: for a hub served in a
    thread (:func:`serve_in_thread`) the wait runs there."""
    loop = _SERVED_ON.get(hub)
    if loop is not None and loop is not asyncio.get_running_loop():
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(finished(hub, task_id, timeout), loop)
        )
    log = hub.broker.log
    position = log.first
    with anyio.fail_after(timeout):
        while True:
            start = max(position, log.first)
            events = log.read(start)
            for event in events:
                if event.task.id == task_id and event.task.terminal:
                    return event.task
            position = start + len(events)  # not log.head: what came since is read next
            if not log.closed:
                await log.wait(position)
                continue
            # A hub that shut down reads no more events (on Redis): ask the broker.
            task = await hub.get(task_id)
            if task.terminal:
                return task
            await anyio.sleep(0.02)


# -- in-process clients ----------------------------------------------------------------


@asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a hub's ``app`` (or of an app whose lifespan runs a hub) through
    ``ASGITransport``, the lifespan entered: request/response only, since that
    transport buffers whole bodies (streams need a :class:`LiveServer`)."""
    if isinstance(app, TaskHub):
        lifespan, asgi = app.lifespan(), app.app
    else:
        lifespan, asgi = app.router.lifespan_context(app), app
    async with lifespan:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client


# -- the JSON codec's two backends -------------------------------------------------------

#: The codec's backends: every test that touches JSON text may run on both.
JSON_BACKENDS = ("orjson", "stdlib")


def use_json(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``sse_tasks``' JSON codec use ``backend`` for the rest of the test (the
    stdlib's even where orjson is installed); skips ``orjson`` where it is not."""
    if backend == "stdlib":
        monkeypatch.setattr(codec, "_orjson", None)
    elif importlib.util.find_spec("orjson") is None:
        pytest.skip("orjson is not installed")


def parse_source(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` in a fresh thread: Python 3.11's parser can fail ("AST constructor
    recursion depth mismatch") in a thread that has seen a RecursionError, as the codec's
    and the fuzz tests' threads have."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ast.parse, source, filename).result()


# -- processes the tests start (engine workers, servers) -------------------------------


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` and to every process descended from
    ``pid`` (RQ's work horse, for one, leaves its worker's group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)
        pending.extend(children.get(child, []))


@dataclass
class Proc:
    """A process the tests started in a process group of its own, its output in ``log``.

    :meth:`stop` sends ``stop_signal`` (the one its program shuts down gracefully on, so a
    worker writes its coverage data) and waits; :meth:`kill` is SIGKILL (a worker that dies).
    """

    what: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM
    stopped: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready: str | Callable[[str], bool], timeout: float = 60.0) -> None:
        """Wait until the log shows ``ready`` (or ``ready(log)`` is true); fail with the
        log if the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while not (ready in self.text() if isinstance(ready, str) else ready(self.text())):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} never got ready ({ready!r}):\n{self.text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the whole process group: nothing more is reported or renewed."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        self.stopped = True

    def signal_stop(self) -> None:
        """Send ``stop_signal`` to the process group, without waiting (see :func:`stop_all`)."""
        if not self.stopped and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, self.stop_signal)
            except ProcessLookupError:
                pass

    def reap(self, timeout: float = 20.0) -> None:
        """Wait for the process to exit after :meth:`signal_stop` (SIGKILL after ``timeout``)."""
        if not self.stopped:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.stopped = True
        self.log.unlink(missing_ok=True)

    def stop(self, timeout: float = 20.0) -> None:
        self.signal_stop()
        self.reap(timeout)


P = TypeVar("P", bound=Proc)


def spawn(
    what: str,
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    ready: str | Callable[[str], bool] | None = None,
    timeout: float = 60.0,
    stop_signal: int = signal.SIGTERM,
    kind: type[P] = Proc,  # type: ignore[assignment]
) -> P:
    """Start ``command`` in a process group of its own with exactly ``env``, its output in a
    temporary log, as a ``kind``; if ``ready`` is given, wait for it (killed if it never is)."""
    log = Path(tempfile.mkstemp(prefix=f"{what.replace(' ', '-')}-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = kind(what, proc, log, stop_signal)
    if ready is not None:
        try:
            started.wait_for(ready, timeout)
        except BaseException:
            started.kill()
            started.log.unlink(missing_ok=True)
            raise
    return started


def stop_all(processes: Sequence[Proc], timeout: float = 20.0) -> None:
    """Stop ``processes`` together: signal them all, then wait for each."""
    for process in processes:
        process.signal_stop()
    for process in processes:
        process.reap(timeout)


def worker_pythonpath(*directories: Path) -> str:
    """``PYTHONPATH`` for a worker: ``directories``, the checkout and its tests (their shared
    helpers, such as ``_results``), then the one inherited."""
    paths = [*map(str, directories), str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(paths)


def broker_url_of(request: pytest.FixtureRequest) -> str:
    """The broker URL of a ``broker_url`` fixture's parameter: ``memory``, ``redis`` (a
    flushed database of the session's redis-server) or ``cluster`` (the session's flushed
    three-master Redis Cluster)."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    try:
        import sse_tasks.brokers.redis  # noqa: F401
    except ImportError:
        pytest.skip("the redis broker is not available")
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return str(cluster.url)
    url: str = request.getfixturevalue("redis_url")
    db = request.getfixturevalue("redis_db")
    return url.rsplit("/", 1)[0] + f"/{db}"


# -- an engine example's two commands, seen by every client ---------------------------


def check_demo_tasks(url: str, details: Callable[[], str]) -> None:
    """The demo's ``generate``, ``fail``, ``sleep`` and ``count`` on an engine example's
    worker, seen by the clients a user has: ``sse-tasks watch`` follows each to its end
    (exit status 0 succeeded, 1 failed, 2 cancelled), curl reads ``generate``'s whole
    output from its stream, and a ``DELETE`` cancels a running ``count`` (it stops at its
    next step on every engine, where a ``sleep`` would hold a worker until it ends)."""
    from sse_tasks.demo import word

    bin_dir = Path(sys.executable).parent

    def post(name: str, **params: Any) -> str:
        answer = httpx.post(f"{url}/tasks", json={"name": name, "params": params}, timeout=10)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def watch(task_id: str) -> subprocess.CompletedProcess[str]:
        command = [str(bin_dir / "sse-tasks"), "watch", f"{url}/tasks/{task_id}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    generated = post("generate", words=12, delay=0.01)
    watched = watch(generated)
    assert watched.returncode == 0, (watched.stdout, watched.stderr, details())
    streamed = subprocess.run(
        ["curl", "-sN", "--max-time", "30", f"{url}/tasks/{generated}/events?output=1"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    data = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: ")]
    text = "".join(d["text"] for d in data if d.get("kind") == "output")
    assert text == "".join(f"{word(i)} " for i in range(12)), streamed
    assert [d["text"] for d in data if d.get("kind") == "log"] == ["10 of 12 words"], streamed
    assert "event: task.succeeded" in streamed

    failed = watch(post("fail", message="on purpose"))
    assert failed.returncode == 1, (failed.stdout, failed.stderr, details())

    slept = watch(post("sleep", seconds=0.2))
    assert slept.returncode == 0, (slept.stdout, slept.stderr, details())

    counting = post("count", n=2000, interval=0.05)
    wait_until(
        lambda: httpx.get(f"{url}/tasks/{counting}", timeout=5).json().get("state") == "running",
        "the count runs",
        60,
        details=details,
    )
    assert httpx.delete(f"{url}/tasks/{counting}", timeout=10).status_code == 202
    cancelled = watch(counting)
    assert cancelled.returncode == 2, (cancelled.stdout, cancelled.stderr, details())


def reference_loop_seconds() -> float:
    """Seconds a pure-Python loop of 10 million additions takes here, at module level (as
    ``python3 -c`` runs it: global names): the best of five loops of 2 million, times 5,
    so that a moment's load beside it counts little."""
    code = compile("total = 0\nfor i in range(2_000_000):\n    total += i\n", "<reference loop>", "exec")
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        exec(code, {})
        best = min(best, time.perf_counter() - started)
    return 5 * best
