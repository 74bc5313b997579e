"""The engines under the contract: the fake engine (threads in this process), Celery
(real worker processes, from ``tests/executors/conftest.py``) and Huey (real consumers,
``huey_workers.py``)."""

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


HUEY_DB = 4  # Huey's own queue, beside the hub's database 0


@pytest.fixture(scope="module")
def huey_app(redis_url: str) -> Iterator[ModuleType]:
    """The contract's Huey app in this process (a hooked sender) and one consumer of it."""
    import huey_workers

    base = redis_url.partition("?")[0].rsplit("/", 1)[0]
    env = {"SSE_TASKS_BROKER": f"{base}/0", "HUEY_REDIS_URL": f"{base}/{HUEY_DB}", "HUEY_NAME": "contract"}
    os.environ.update(env)
    import huey_tasks

    consumer = huey_workers.start_consumer(env, workers=2)
    yield huey_tasks
    consumer.stop()


def _huey(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from huey import RedisHuey

    from sse_tasks.huey import HueyEngine

    module = request.getfixturevalue("huey_app")
    app = module.huey

    def make(reachable: bool) -> RemoteEngine:
        if reachable:
            return HueyEngine(app)
        offline = RedisHuey("offline", url="redis://127.0.0.1:1/0")  # nothing listens on port 1
        offline.task(name="add")(module.TASKS["add"])
        return HueyEngine(offline)

    def enqueue(name: str, **params: Any) -> str:
        task = module.make_task(app, name, params)
        app.enqueue(task)
        return str(task.id)

    def dying() -> Dying:
        import huey_workers

        own = f"dying-{secrets.token_hex(4)}"
        env = {
            "SSE_TASKS_BROKER": f"{url}?lease={LEASE}",
            "HUEY_REDIS_URL": os.environ["HUEY_REDIS_URL"],
            "HUEY_NAME": own,
        }
        consumer = huey_workers.start_consumer(env, workers=1)
        cleanup.append(consumer.stop)
        there = module.make(own)

        def enqueue_there(name: str, **params: Any) -> str:
            task = module.make_task(there, name, params)
            there.enqueue(task)
            return str(task.id)

        return Dying(enqueue_there, consumer.kill)

    def revoked(task_id: str) -> None:  # the hub revokes after it answers
        deadline = time.monotonic() + 30
        while not app.is_revoked(task_id):
            assert time.monotonic() < deadline, "Huey never took in the revoke"
            time.sleep(0.01)

    return Engine("huey", url, make, enqueue, dying, revoked)


@pytest.fixture(params=["fake", "celery", "huey"])
def engine(request: pytest.FixtureRequest, redis_url: str, redis_db: int) -> Iterator[Engine]:
    """Each contract test runs against the fake engine, Celery and Huey."""
    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    cleanup: list[Callable[[], None]] = []
    try:
        if request.param == "fake":
            yield _fake(url, cleanup)
        else:
            yield {"celery": _celery, "huey": _huey}[request.param](request, url, cleanup)
    finally:
        for step in reversed(cleanup):
            step()
