"""The engines under the contract: the fake engine (threads in this process) and Celery
(real worker processes, from ``tests/executors/conftest.py``)."""

from __future__ import annotations

import importlib.util
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


@pytest.fixture(scope="session")
def arq_urls(redis_url: str) -> dict[str, str]:
    """The environment of the arq workers and of the test process's arq settings."""
    from arq_workers import db_url

    return {
        "SSE_TASKS_BROKER": db_url(redis_url, 0),
        "ARQ_REDIS_URL": db_url(redis_url, 5),
        "ARQ_TEST_QUEUE": "arq:contract",
    }


@pytest.fixture(scope="module")
def arq_worker(arq_urls: dict[str, str]) -> Iterator[Any]:
    """One arq worker (two jobs at a time) for the module's arq tests."""
    import redis
    from arq_workers import start_arq_worker

    with redis.Redis.from_url(arq_urls["ARQ_REDIS_URL"]) as client:
        client.flushdb()
    worker = start_arq_worker(arq_urls)
    yield worker
    worker.stop()


def _arq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    pytest.importorskip("arq")
    import json
    import os
    import subprocess

    from arq.connections import RedisSettings
    from arq_workers import start_arq_worker

    from sse_tasks.arq import ArqExecutor

    urls = request.getfixturevalue("arq_urls")
    os.environ.update({key: value for key, value in urls.items() if key != "SSE_TASKS_BROKER"})
    import arq_tasks

    request.getfixturevalue("arq_worker")

    def make(reachable: bool) -> RemoteEngine:
        if reachable:
            return ArqExecutor(arq_tasks.WorkerSettings)
        dead = RedisSettings(host="127.0.0.1", port=1)  # nothing listens on port 1
        return ArqExecutor(arq_tasks.WorkerSettings, redis_settings=dead)

    def enqueue_on(queue: str, name: str, **params: Any) -> str:
        """arq's own ``enqueue_job``, from another process (no hub involved)."""
        script = (
            "import asyncio, json, sys\n"
            "from arq.connections import RedisSettings, create_pool\n"
            "async def main():\n"
            "    pool = await create_pool(RedisSettings.from_dsn(sys.argv[1]))\n"
            "    params = json.loads(sys.argv[4])\n"
            "    job = await pool.enqueue_job(sys.argv[3], _queue_name=sys.argv[2], **params)\n"
            "    print(job.job_id)\n"
            "asyncio.run(main())\n"
        )
        args = [sys.executable, "-W", "ignore", "-c", script, urls["ARQ_REDIS_URL"], queue, name]
        args.append(json.dumps(params))
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip().splitlines()[-1]

    def enqueue(name: str, **params: Any) -> str:
        return enqueue_on(arq_tasks.QUEUE, name, **params)

    def dying() -> Dying:
        own = f"arq:dying-{secrets.token_hex(4)}"
        env = {**urls, "SSE_TASKS_BROKER": f"{urls['SSE_TASKS_BROKER']}?lease={LEASE}", "ARQ_TEST_QUEUE": own}
        worker = start_arq_worker(env)
        cleanup.append(worker.stop)

        def enqueue_there(name: str, **params: Any) -> str:
            return enqueue_on(own, name, **params)

        return Dying(enqueue_there, worker.kill)

    return Engine("arq", url, make, enqueue, dying)



@pytest.fixture(params=["fake", "celery", "arq"])
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
            yield _arq(request, url, cleanup)
    finally:
        for step in reversed(cleanup):
            step()
