"""Shared fixtures: brokers (memory and a real redis-server), hubs, live servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from _support import HubFactory, LiveServer, broker_url_of, free_port, reference_loop_seconds, serve_in_thread

from sse_tasks import TaskHub
from sse_tasks.demo import register_demo_tasks


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--dist loadgroup``: suffix each ``xdist_group`` test's id with ``@<group>``, the key
    pytest-xdist schedules a group's tests to one process by. pytest-xdist 3.8 writes it to
    ``item._nodeid``, which pytest 9 no longer reads (its ids are ``item._id``): without this
    the groups are ignored. A no-op where xdist's own suffix took.

    A module's browser tests are a group of their own (unless in one already): one process
    runs them, so its Chromium (module-scoped) starts once, not once in each process.

    Grouped tests come first: xdist hands out work in collection order, and a group is
    one piece of work, the longest of all; the single tests after them fill the gaps,
    rather than a late group running alone at the end."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        return
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()) and item.get_closest_marker("xdist_group") is None:
            module = getattr(item, "module", None)
            item.add_marker(pytest.mark.xdist_group(f"browser-{getattr(module, '__name__', '')}"))
    for item in items:
        groups = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        node_id = getattr(item, "_id", None)
        if groups and node_id is not None and "@" not in item.nodeid:
            item._id = type(node_id).parse(f"{item.nodeid}@{'_'.join(groups)}")
    items.sort(key=lambda item: "@" not in item.nodeid)  # stable: the same order everywhere


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-machine-speed",
        action="store_true",
        help="leave out the machine's speed after the tests (over a second of CPU): for runs a test starts",
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The machine's speed beside the suite's time: a shared machine may run far slower
    for hours, and every test with it, so two runs' times compare only with this."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    if config.getoption("no_machine_speed"):
        return
    seconds = reference_loop_seconds()
    version = ".".join(map(str, sys.version_info[:3]))
    terminalreporter.write_line(
        f"machine speed: a pure-Python loop of 10 million additions takes {seconds:.2f} s here "
        f"on Python {version} (pytest's time scales with it)"
    )


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """A server started in-process (``sse-tasks serve`` under CliRunner) configures the
    ``sse_tasks`` loggers; put them back so later tests' ``caplog`` sees their records."""
    import logging

    names = ("sse_tasks", "sse_tasks.redis", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate, list(logger.handlers), logger.disabled)
    yield
    for name, (level, propagate, handlers, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers
        logger.disabled = disabled


@pytest.fixture
def unmeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes the test starts run without coverage: load tests and benchmarks time the
    code (which other tests measure) and would spend most of their CPU in its tracer."""
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    monkeypatch.delenv("COVERAGE_PROCESS_START", raising=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and sse-starlette run on asyncio


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole session.

    Uses ``$SSE_TASKS_TEST_REDIS`` if set (a server started by ``.ci/run``).
    """
    given = os.environ.get("SSE_TASKS_TEST_REDIS")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sse-tasks-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on ``memory://`` and on a real Redis."""
    return broker_url_of(request)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A three-master Redis Cluster for the whole session (tests flush it)."""
    from _redis import RedisCluster

    cluster = RedisCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[int]:
    """A flushed Redis database for one test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield 0
    client.flushdb()
    client.close()


@pytest.fixture
def make_hub(broker_url: str) -> HubFactory:
    """``make_hub(**options)``: a TaskHub on the test's broker with the demo tasks registered."""

    def make(**options: Any) -> TaskHub:
        options.setdefault("shutdown_grace", 1.0)
        hub = TaskHub(options.pop("broker", broker_url), **options)
        register_demo_tasks(hub)
        return hub

    return make


@pytest.fixture
def hub(make_hub: HubFactory) -> TaskHub:
    return make_hub()


@pytest.fixture
async def running_hub(hub: TaskHub) -> AsyncIterator[TaskHub]:
    """The hub, entered (its runner started) for an in-process test."""
    async with hub:
        yield hub


@pytest.fixture
async def client(running_hub: TaskHub) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (request/response only: ASGITransport buffers whole bodies)."""
    transport = httpx.ASGITransport(app=running_hub.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """``live_server(hub, app=None)``: serve on a real loopback port; stopped after the test."""
    with _ServerStack() as stack:
        yield stack.start


class _ServerStack:
    def __init__(self) -> None:
        self._contexts: list[Any] = []

    def start(self, hub: TaskHub, app: Any = None, **config: Any) -> LiveServer:
        context = serve_in_thread(app or hub.app, hub, **config)
        server = context.__enter__()
        self._contexts.append(context)
        return server

    def __enter__(self) -> _ServerStack:
        return self

    def __exit__(self, *exc: object) -> None:
        for context in reversed(self._contexts):
            context.__exit__(None, None, None)


@pytest.fixture
def server(hub: TaskHub, live_server: Callable[..., LiveServer]) -> LiveServer:
    """The test's hub served by a real uvicorn on 127.0.0.1."""
    return live_server(hub)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of :func:`server` over real sockets."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


# -- headless Chromium (the page tests import _browser, which skips them without it) ----------


@pytest.fixture
def page_options() -> dict[str, Any]:
    """Options of the page's browser context (a module may override this fixture)."""
    return {}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (each test gets a fresh context). Not per
    session: Playwright's sync API holds an event loop that later async tests would meet."""
    from _browser import launched

    with launched() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, page_options: dict[str, Any]) -> Iterator[Any]:
    from _browser import checked_page

    with checked_page(browser, **page_options) as page:
        yield page
