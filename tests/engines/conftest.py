"""The engines under the contract: the fake engine (threads in this process) and Celery
(real worker processes, from ``tests/executors/conftest.py``)."""

from __future__ import annotations

import importlib.util
import os
import queue
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _engines import LEASE, Dying, Engine

from sse_tasks.engines import RemoteEngine

EXECUTORS = Path(__file__).resolve().parent.parent / "executors"
sys.path.insert(0, str(EXECUTORS))  # tasks_app, the Celery tests' app
_spec = importlib.util.spec_from_file_location("celery_workers", EXECUTORS / "conftest.py")
assert _spec is not None and _spec.loader is not None
celery_workers = sys.modules.setdefault("celery_workers", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(celery_workers)
celery_urls = celery_workers.celery_urls
tasks_app = celery_workers.tasks_app


@pytest.fixture(scope="session")
def dramatiq_tasks(redis_url: str) -> ModuleType:
    """The contract's actors, imported here as a sender (after the environment points them
    at the test Redis)."""
    pytest.importorskip("dramatiq")
    pytest.importorskip("dramatiq_abort")
    from dramatiq_workers import environment

    os.environ.update(environment(redis_url))
    import dramatiq_tasks as module

    return module


@pytest.fixture(scope="module")
def dramatiq_worker(redis_url: str, dramatiq_tasks: ModuleType) -> Iterator[Any]:
    """One Dramatiq worker (one process, two threads) for the module's Dramatiq tests."""
    from dramatiq_workers import start_worker

    worker = start_worker(redis_url)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def celery_threads(celery_urls: dict[str, str], tasks_app: ModuleType) -> Iterator[Any]:
    """One Celery worker (threads pool) for the module's Celery tests."""
    worker = celery_workers.start_worker(celery_urls, "threads", 2)
    yield worker
    worker.stop()


def _dramatiq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from dramatiq_workers import dying_worker, enqueue_on

    from sse_tasks.dramatiq import DramatiqEngine

    request.getfixturevalue("dramatiq_worker")
    tasks = request.getfixturevalue("dramatiq_tasks")

    def make(reachable: bool) -> RemoteEngine:
        if reachable:
            return DramatiqEngine(tasks.broker)
        return DramatiqEngine(offline_broker(cleanup))

    def enqueue(name: str, **params: Any) -> str:
        return str(tasks.actors[name].send(**params).message_id)

    def dying() -> Dying:
        worker, queue_name = dying_worker(url, LEASE)
        cleanup.append(worker.stop)
        return Dying(lambda name, **params: enqueue_on(tasks, queue_name, name, params), worker.kill)

    return Engine("dramatiq", url, make, enqueue, dying)


def offline_broker(cleanup: list[Callable[[], None]]) -> Any:
    """A Dramatiq broker nobody listens to (port 1), with the ``add`` actor."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from fake import add

    offline = RedisBroker(url="redis://127.0.0.1:1/0")
    dramatiq.actor(add, actor_name="add", broker=offline)
    cleanup.append(offline.close)
    return offline


def _fake(url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from fake import FakeEngine, FakeWorkers, Message

    messages: queue.Queue[Message | None] = queue.Queue()
    workers = FakeWorkers(messages, url)
    cleanup.append(workers.close)

    def dying() -> Dying:
        own: queue.Queue[Message | None] = queue.Queue()
        doomed = FakeWorkers(own, f"{url}?lease={LEASE}", threads=1)
        cleanup.append(lambda: doomed.close() if doomed.threads[0].is_alive() else None)
        return Dying(doomed.enqueue, doomed.kill)

    def make(reachable: bool) -> RemoteEngine:
        return FakeEngine(messages, reachable=reachable)

    return Engine("fake", url, make, workers.enqueue, dying)


def _celery(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from celery import Celery

    from sse_tasks.celery import CeleryExecutor

    request.getfixturevalue("celery_threads")
    app = request.getfixturevalue("tasks_app").app
    urls = request.getfixturevalue("celery_urls")

    def make(reachable: bool) -> RemoteEngine:
        if reachable:
            return CeleryExecutor(app)
        dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
        offline = Celery("offline", broker=dead, broker_write_url=dead, set_as_current=False)
        offline.task(name="add", shared=False)(app.tasks["add"].run)
        cleanup.append(offline.close)
        return CeleryExecutor(offline)

    def enqueue(name: str, **params: Any) -> str:
        return str(app.tasks[name].delay(**params).id)

    def dying() -> Dying:
        own = f"dying-{secrets.token_hex(4)}"
        leased = f"{urls['SSE_TASKS_BROKER']}?lease={LEASE}"
        env = {**urls, "SSE_TASKS_BROKER": leased, "TASKS_APP_QUEUE": own}
        worker = celery_workers.start_worker(env, "threads", 1)
        cleanup.append(worker.stop)

        def enqueue_there(name: str, **params: Any) -> str:
            return str(app.tasks[name].apply_async(kwargs=params, queue=own).id)

        return Dying(enqueue_there, worker.kill)

    def revoked(task_id: str) -> None:
        deadline = time.monotonic() + 30
        while not any(task_id in ids for ids in (app.control.inspect(timeout=1).revoked() or {}).values()):
            assert time.monotonic() < deadline, "the worker never took in the revoke"

    return Engine("celery", url, make, enqueue, dying, revoked)


@pytest.fixture(params=["fake", "celery", "dramatiq"])
def engine(request: pytest.FixtureRequest, redis_url: str, redis_db: int) -> Iterator[Engine]:
    """Each contract test runs against the fake engine and against Celery."""
    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    cleanup: list[Callable[[], None]] = []
    try:
        if request.param == "fake":
            yield _fake(url, cleanup)
        elif request.param == "celery":
            yield _celery(request, url, cleanup)
        else:
            yield _dramatiq(request, url, cleanup)
    finally:
        for step in reversed(cleanup):
            step()
