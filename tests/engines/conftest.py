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

@pytest.fixture(scope="module")
def celery_threads(celery_urls: dict[str, str], tasks_app: ModuleType) -> Iterator[Any]:
    """One Celery worker (threads pool) for the module's Celery tests."""
    worker = celery_workers.start_worker(celery_urls, "threads", 2)
    yield worker
    worker.stop()


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


@pytest.fixture(scope="module")
def taskiq_env(redis_url: str) -> dict[str, str]:
    base = redis_url.rsplit("/", 1)[0]
    return {"SSE_TASKS_BROKER": f"{base}/0", "TASKIQ_REDIS_URL": f"{base}/5", "TASKIQ_QUEUE": "taskiq"}


@pytest.fixture(scope="module")
def taskiq_worker(taskiq_env: dict[str, str]) -> Iterator[Any]:
    """One taskiq worker (two tasks at once) for the module's taskiq tests."""
    from taskiq_workers import TaskiqWorker

    worker = TaskiqWorker(taskiq_env)
    yield worker
    worker.stop()


def _taskiq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from taskiq_redis import ListQueueBroker
    from taskiq_workers import TaskiqWorker, enqueue

    from sse_tasks.taskiq import TaskiqExecutor

    request.getfixturevalue("taskiq_worker")
    env: dict[str, str] = request.getfixturevalue("taskiq_env")
    os.environ.update(env)  # the test process's broker: a sender
    import taskiq_tasks

    def make(reachable: bool) -> RemoteEngine:
        # A broker per hub: its connection pool belongs to the hub's event loop.
        url = env["TASKIQ_REDIS_URL"] if reachable else "redis://127.0.0.1:1/0"  # nothing on port 1
        broker = ListQueueBroker(url, queue_name=env["TASKIQ_QUEUE"])
        for name, task in taskiq_tasks.broker.get_all_tasks().items():
            broker.register_task(task.original_func, task_name=name)
        return TaskiqExecutor(broker)

    def dying() -> Dying:
        own = {**env, "SSE_TASKS_BROKER": f"{env['SSE_TASKS_BROKER']}?lease={LEASE}"}
        own["TASKIQ_QUEUE"] = f"dying-{secrets.token_hex(4)}"
        worker = TaskiqWorker(own, max_async=1)
        cleanup.append(worker.stop)
        return Dying(lambda name, **params: enqueue(own, name, **params), worker.kill)

    return Engine("taskiq", url, make, lambda name, **params: enqueue(env, name, **params), dying)


@pytest.fixture(params=["fake", "celery", "taskiq"])
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
            yield _taskiq(request, url, cleanup)
    finally:
        for step in reversed(cleanup):
            step()
