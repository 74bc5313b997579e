"""The engines under the contract: the fake engine (threads in this process), Celery
(real worker processes, from ``tests/executors/conftest.py``) and the other engines' real
workers (``<engine>_workers.py``).

Each real engine's tests (its contract tests and its own modules) run in an xdist group
of their own, ``engine-<name>``: on one pytest process, which starts that engine's shared
workers once (session-scoped fixtures) and stops them all together at its end. Each
engine has Redis databases of its own on the process's redis-server (the hub's is 0).
"""

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
from _engines import LEASE, Dying, Engine, group
from _support import Proc, stop_all

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
def engine_workers() -> Iterator[list[Proc]]:
    """The engines' shared workers started in this pytest process, stopped together at its end
    (each with the signal it shuts down gracefully on: it writes its coverage data)."""
    started: list[Proc] = []
    yield started
    stop_all(started)


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


@pytest.fixture(scope="session")
def dramatiq_worker(redis_url: str, dramatiq_tasks: ModuleType, engine_workers: list[Proc]) -> Proc:
    """One Dramatiq worker (one process, two threads) for the Dramatiq tests."""
    from dramatiq_workers import start_worker

    worker = start_worker(redis_url)
    engine_workers.append(worker)
    return worker


@pytest.fixture(scope="module")
def celery_threads(celery_urls: dict[str, str], tasks_app: ModuleType) -> Iterator[Any]:
    """One Celery worker (threads pool) for the contract's Celery tests (one group: started
    once). Module-scoped: Celery's database is also the Celery executor tests', which flush
    it and start workers of their own on the same queue."""
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
        return Dying.of(lambda name, **params: enqueue_on(tasks, queue_name, name, params), worker)

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return str(tasks.actors[name].send_with_options(kwargs=params, sse_tasks_tags=tags).message_id)

    return Engine("dramatiq", url, make, enqueue, dying, tagged=tagged)


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

    return Engine("fake", url, make, workers.enqueue, dying, tagged=workers.enqueue_tagged)


def _celery(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from celery import Celery

    from sse_tasks.celery import CeleryExecutor

    threads = request.getfixturevalue("celery_threads")
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

        return Dying.of(enqueue_there, worker)

    def revoked(task_id: str) -> None:
        deadline = time.monotonic() + 30
        inspect = app.control.inspect(destination=[threads.name], timeout=1)  # not another test's worker
        while not any(task_id in ids for ids in (inspect.revoked() or {}).values()):
            assert time.monotonic() < deadline, "the worker never took in the revoke"

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return str(app.tasks[name].apply_async(kwargs=params, headers={"sse_tasks_tags": tags}).id)

    return Engine("celery", url, make, enqueue, dying, revoked, tagged)


RQ_DB = 3  # RQ's own queues (Celery's broker is on 1)


@pytest.fixture(scope="session")
def rq_workers(redis_url: str, engine_workers: list[Proc]) -> dict[str, Any]:
    """Two ``rq worker`` processes on one queue for the RQ tests."""
    from rq_workers import start_rq_worker

    base = redis_url.rsplit("/", 1)[0]
    rq_url, queue = f"{base}/{RQ_DB}", f"contract-{secrets.token_hex(4)}"
    engine_workers.extend(start_rq_worker(rq_url, f"{base}/0", queue) for _ in range(2))
    return {"url": rq_url, "queue": queue}


def _rq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    import redis
    import rq
    from fake import TASKS
    from rq_workers import start_rq_worker

    from sse_tasks.rq import RQEngine

    shared = request.getfixturevalue("rq_workers")
    connection = redis.Redis.from_url(shared["url"])
    cleanup.append(connection.close)
    queue = rq.Queue(shared["queue"], connection=connection)

    def make(reachable: bool) -> RemoteEngine:
        if reachable:
            return RQEngine(queue, TASKS)
        dead = redis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
        return RQEngine(rq.Queue("offline", connection=dead), TASKS)

    def enqueue(name: str, **params: Any) -> str:
        return str(queue.enqueue_call(TASKS[name], kwargs=params).id)

    def dying() -> Dying:
        own = rq.Queue(f"dying-{secrets.token_hex(4)}", connection=connection)
        worker = start_rq_worker(shared["url"], f"{url}?lease={LEASE}", own.name)
        cleanup.append(worker.stop)

        def enqueue_there(name: str, **params: Any) -> str:
            return str(own.enqueue_call(TASKS[name], kwargs=params).id)

        return Dying.of(enqueue_there, worker)

    def revoked(task_id: str) -> None:
        deadline = time.monotonic() + 30
        job = rq.job.Job.fetch(task_id, connection=connection)
        while job.get_status(refresh=True) != rq.job.JobStatus.CANCELED:
            assert time.monotonic() < deadline, "the job was never cancelled in RQ"
            time.sleep(0.02)

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return str(queue.enqueue_call(TASKS[name], kwargs=params, meta={"sse_tasks_tags": tags}).id)

    return Engine("rq", url, make, enqueue, dying, revoked, tagged)


HUEY_DB = 4  # Huey's own queue, beside the hub's database 0


@pytest.fixture(scope="session")
def huey_app(redis_url: str, engine_workers: list[Proc]) -> ModuleType:
    """The contract's Huey app in this process (a hooked sender) and one consumer of it."""
    import huey_workers

    base = redis_url.partition("?")[0].rsplit("/", 1)[0]
    env = {"SSE_TASKS_BROKER": f"{base}/0", "HUEY_REDIS_URL": f"{base}/{HUEY_DB}", "HUEY_NAME": "contract"}
    os.environ.update(env)
    import huey_tasks

    engine_workers.append(huey_workers.start_consumer(env, workers=2))
    return huey_tasks


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

        return Dying.of(enqueue_there, consumer)

    def revoked(task_id: str) -> None:  # the hub revokes after it answers
        deadline = time.monotonic() + 30
        while not app.is_revoked(task_id):
            assert time.monotonic() < deadline, "Huey never took in the revoke"
            time.sleep(0.01)

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return enqueue(name, **params, sse_tasks_tags=tags)  # a keyword the hook takes out

    return Engine("huey", url, make, enqueue, dying, revoked, tagged)


@pytest.fixture(scope="session")
def taskiq_env(redis_url: str) -> dict[str, str]:
    base = redis_url.rsplit("/", 1)[0]
    return {"SSE_TASKS_BROKER": f"{base}/0", "TASKIQ_REDIS_URL": f"{base}/5", "TASKIQ_QUEUE": "taskiq"}


@pytest.fixture(scope="session")
def taskiq_worker(taskiq_env: dict[str, str], engine_workers: list[Proc]) -> Proc:
    """One taskiq worker (two tasks at once) for the taskiq tests."""
    from taskiq_workers import start_taskiq_worker

    worker = start_taskiq_worker(taskiq_env)
    engine_workers.append(worker)
    return worker


@pytest.fixture(scope="session")
def arq_urls(redis_url: str) -> dict[str, str]:
    """The environment of the arq workers and of the test process's arq settings."""
    from arq_workers import db_url

    return {
        "SSE_TASKS_BROKER": db_url(redis_url, 0),
        "ARQ_REDIS_URL": db_url(redis_url, 6),  # taskiq has 5
        "ARQ_TEST_QUEUE": "arq:contract",
    }


@pytest.fixture(scope="session")
def arq_worker(arq_urls: dict[str, str], engine_workers: list[Proc]) -> Proc:
    """One arq worker (two jobs at a time) for the arq tests."""
    import redis
    from arq_workers import start_arq_worker

    with redis.Redis.from_url(arq_urls["ARQ_REDIS_URL"]) as client:
        client.flushdb()
    worker = start_arq_worker(arq_urls)
    engine_workers.append(worker)
    return worker


def _taskiq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    from taskiq_redis import ListQueueBroker
    from taskiq_workers import enqueue, start_taskiq_worker

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
        worker = start_taskiq_worker(own, max_async=1)
        cleanup.append(worker.stop)
        return Dying.of(lambda name, **params: enqueue(own, name, **params), worker)

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return enqueue(env, name, labels={"sse_tasks_tags": ",".join(tags)}, **params)

    return Engine(
        "taskiq", url, make, lambda name, **params: enqueue(env, name, **params), dying, tagged=tagged
    )


def _arq(request: pytest.FixtureRequest, url: str, cleanup: list[Callable[[], None]]) -> Engine:
    pytest.importorskip("arq")
    import os

    from arq.connections import RedisSettings
    from arq_workers import enqueue_job, start_arq_worker

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
        return enqueue_job(urls["ARQ_REDIS_URL"], queue, name, **params)

    def enqueue(name: str, **params: Any) -> str:
        return enqueue_on(arq_tasks.QUEUE, name, **params)

    def dying() -> Dying:
        own = f"arq:dying-{secrets.token_hex(4)}"
        env = {**urls, "SSE_TASKS_BROKER": f"{urls['SSE_TASKS_BROKER']}?lease={LEASE}", "ARQ_TEST_QUEUE": own}
        worker = start_arq_worker(env)
        cleanup.append(worker.stop)

        def enqueue_there(name: str, **params: Any) -> str:
            return enqueue_on(own, name, **params)

        return Dying.of(enqueue_there, worker)

    def tagged(tags: list[str], name: str, **params: Any) -> str:
        return enqueue(name, **params, sse_tasks_tags=tags)  # a keyword the hook takes out

    return Engine("arq", url, make, enqueue, dying, tagged=tagged)


MAKERS: dict[str, Callable[[pytest.FixtureRequest, str, list[Callable[[], None]]], Engine]] = {
    "fake": lambda request, url, cleanup: _fake(url, cleanup),
    "celery": _celery,
    "rq": _rq,
    "huey": _huey,
    "dramatiq": _dramatiq,
    "taskiq": _taskiq,
    "arq": _arq,
}


@pytest.fixture(params=[name if name == "fake" else pytest.param(name, marks=group(name)) for name in MAKERS])
def engine(request: pytest.FixtureRequest, redis_url: str, redis_db: int) -> Iterator[Engine]:
    """Each contract test runs against every engine of :data:`MAKERS`."""
    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    cleanup: list[Callable[[], None]] = []
    try:
        yield MAKERS[request.param](request, url, cleanup)
    finally:
        for step in reversed(cleanup):
            step()
