"""Real Celery worker processes against the session's redis-server, and a hub in front of them.

The hub's Redis is database 0 of the session's server (flushed for each test by
``redis_db``); Celery's broker is database 1. The test process imports the same app
(``tasks_app``), so ``.delay()`` from a test is a sender hooked like any other code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _support import redis_db

pytest.importorskip("celery")

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def celery_urls(redis_url: str) -> dict[str, str]:
    """The environment of every worker and of the test process's app."""
    return {"SSE_TASKS_BROKER": redis_db(redis_url, 0), "CELERY_BROKER_URL": redis_db(redis_url, 1)}


@pytest.fixture(scope="session")
def tasks_app(celery_urls: dict[str, str]) -> ModuleType:
    """The test app, imported here as a sender (after the environment points it at the test Redis)."""
    os.environ.update(celery_urls)
    import tasks_app as module

    return module


@dataclass
class Worker:
    """One ``celery worker`` process (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    pool: str
    queue: str = "celery"  # the Celery queue it consumes
    name: str = ""  # its node name, a control command's destination
    stopped: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the worker's log shows ``needle`` (it exits: fail with the log)."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery worker never logged {needle!r}:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        """Pids of the pool's child processes (prefork)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.stopped = True

    def stop(self) -> None:
        if self.stopped or self.proc.poll() is not None:
            self.stopped = True
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stopped = True


def start_worker(
    env: dict[str, str], pool: str = "prefork", concurrency: int = 2, app: str = "tasks_app", cwd: Path = HERE
) -> Worker:
    log = Path(tempfile.mkstemp(prefix=f"celery-{pool}-", suffix=".log")[1])
    name = f"{pool}-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
        f"--hostname={name}",
    ]
    path = os.pathsep.join([str(cwd), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, **env, "PYTHONPATH": path}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(proc, log, pool, env.get("TASKS_APP_QUEUE", "celery"), name)
    try:
        worker.wait_for(" ready.")
    except BaseException:
        worker.kill()
        raise
    return worker


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def celery_worker(celery_urls: dict[str, str]) -> Iterator[WorkerFactory]:
    """``celery_worker(pool="prefork", concurrency=2, **env)``: a real worker, stopped after the test."""
    workers: list[Worker] = []

    def start(pool: str = "prefork", concurrency: int = 2, **env: str) -> Worker:
        worker = start_worker({**celery_urls, **env}, pool, concurrency)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.hookimpl(tryfirst=True)  # before the root conftest turns groups into ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One test process runs every test on :func:`shared_celery_worker`: each pool's
    worker starts once in a run, not once per test."""
    for item in items:
        if "shared_celery_worker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("celery-shared"))


#: Whether a test's own code passed (see ``pytest_runtest_makereport``).
PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[PASSED] = report.passed
    return report


@pytest.fixture(scope="session")
def shared_celery_workers() -> Iterator[dict[str, Worker]]:
    """The session's shared workers, by pool (see :func:`shared_celery_worker`)."""
    workers: dict[str, Worker] = {}
    yield workers
    for worker in workers.values():
        worker.stop()


@pytest.fixture
def shared_celery_worker(
    shared_celery_workers: dict[str, Worker],
    celery_urls: dict[str, str],
    tasks_app: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[str], Worker]]:
    """``shared_celery_worker(pool)``: the session's worker of ``pool`` (concurrency 2), for a
    test that neither configures, stops nor kills it. Each consumes a queue of its own
    (``shared-<pool>``), the default queue of the test's sends and of its own (retries,
    replacements): the workers a test starts for itself never take another's tasks."""

    used: list[str] = []

    def use(pool: str) -> Worker:
        queue = f"shared-{pool}"
        worker = shared_celery_workers.get(pool)
        if worker is None or worker.proc.poll() is not None:
            worker = start_worker({**celery_urls, "TASKS_APP_QUEUE": queue}, pool, 2)
            shared_celery_workers[pool] = worker
        monkeypatch.setitem(tasks_app.app.conf, "task_default_queue", queue)
        used.append(pool)
        return worker

    yield use
    # A passing test waited for every task it sent to end. One that failed may have left
    # some running or waiting in the worker: it goes, so none reaches the next test.
    if not request.node.stash.get(PASSED, False):
        for pool in used:
            worker = shared_celery_workers.pop(pool, None)
            if worker is not None:
                worker.kill()


@pytest.fixture
def celery_db(celery_urls: dict[str, str]) -> Iterator[None]:
    """Celery's broker database, flushed before and after the test (no task left queued)."""
    import redis

    client = redis.Redis.from_url(celery_urls["CELERY_BROKER_URL"])
    client.flushdb()
    yield
    client.flushdb()
    client.close()


@pytest.fixture
def celery_hub(tasks_app: ModuleType, celery_urls: dict[str, str], redis_db: int, celery_db: None) -> Any:
    """``celery_hub(**executor_options)``: a TaskHub on database 0 whose tasks are the app's."""
    from sse_tasks import TaskHub
    from sse_tasks.celery import CeleryExecutor

    def make(
        *, broker: str | None = None, hub_options: dict[str, Any] | None = None, **options: Any
    ) -> TaskHub:
        executor = CeleryExecutor(tasks_app.app, **options)
        url = broker or celery_urls["SSE_TASKS_BROKER"]
        return TaskHub(url, executor=executor, **(hub_options or {}))

    return make
