"""The web side: a hub whose tasks are a Celery app's, sent to its workers (a remote engine)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
from celery import Celery

from ..._core.models import Task
from ..._core.registry import RegisteredTask, TaskFunction
from ..._runner.engine import NotSent, RemoteEngine
from ..._runner.job import Job
from .message import CREATED_HEADER, HUB_HEADER, OWNER_HEADER, TAGS_HEADER

logger = logging.getLogger("sse_tasks.celery")


class CeleryExecutor(RemoteEngine):
    """Runs the hub's tasks on the workers of the Celery ``app``.

    The hub offers the app's tasks by their Celery names (``tasks`` chooses some;
    default all but Celery's own), checks params against each task's signature,
    sends it with ``apply_async`` (the sse_tasks id is the Celery task id) and answers
    503 ``executor_unavailable`` if the Celery broker cannot take it. The workers report
    through :func:`sse_tasks.celery.connect`, on the hub's Redis broker.

    A 503 means the task never runs and never appears: a send that fails may still have
    left (a lost reply, a client library that retries or buffers), so before it answers
    503 the hub refuses the id in its Redis (``RedisBroker.refuse``), atomically: a
    worker that receives the message later finds it refused and discards it unrun. If a
    worker has already stored the task, the work is under way and the answer is 202.

    A send (or revoke) gives up within ``send_timeout`` seconds, and so does the thread
    doing it: the hub sends over a connection pool of its own (to the app's broker, with
    the app's options) whose socket operations time out after ``send_timeout / 5`` (on
    the Redis transport; read and write timeouts on AMQP), retried twice. A broker that
    refuses connections is reported at once, one that accepts and never answers within
    ``send_timeout``, and no send is left blocked behind the 503 (it could otherwise
    deliver the task long after the client was told it was not sent).

    ``DELETE`` stores ``cancelled`` and revokes the task: a waiting one is discarded; a
    running one stops at its next ``progress()``/``check()``, or at once with
    ``terminate=True`` (SIGTERM to the prefork child running it: set it only when every
    worker runs the prefork pool, which is the only one that can terminate a task).
    """

    name = "Celery"

    def __init__(
        self,
        app: Celery,
        tasks: Iterable[str] | None = None,
        *,
        terminate: bool = False,
        send_timeout: float = 10.0,
    ) -> None:
        if send_timeout <= 0:
            raise ValueError("send_timeout must be positive")
        super().__init__()
        self.app = app
        self.terminate = terminate
        self.send_timeout = send_timeout
        self._chosen = None if tasks is None else tuple(tasks)
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    def registrations(self) -> Iterable[tuple[str, TaskFunction]]:
        tasks = self.app.tasks
        if self._chosen is not None:
            unknown = [name for name in self._chosen if name not in tasks]
            if unknown:
                raise ValueError(f"the Celery app has no task named {', '.join(map(repr, unknown))}")
            return [(name, tasks[name].run) for name in self._chosen]
        offered = []
        for name in sorted(tasks):
            if name.startswith("celery."):
                continue
            try:
                RegisteredTask.build(tasks[name].run, name, None)
            except (TypeError, ValueError) as exc:
                logger.warning("Celery task %r is not offered by the hub: %s", name, exc)
                continue
            offered.append((name, tasks[name].run))
        return offered

    async def send(self, job: Job) -> None:
        task = self.app.tasks[job.task.name]
        headers = {
            HUB_HEADER: "1",
            OWNER_HEADER: job.task.owner or "",
            CREATED_HEADER: job.task.created_at,
            TAGS_HEADER: list(job.task.tags),
        }
        send = functools.partial(
            task.apply_async,
            kwargs=job.params,
            task_id=job.task.id,
            headers=headers,
            retry_policy=_retry_policy(),
        )
        try:
            await self._over_broker(send)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            raise NotSent(f"the Celery broker is unreachable: {exc}") from exc

    async def _over_broker(self, call: Callable[..., Any]) -> None:
        """``call(connection=…)`` in a thread, over a connection whose every wait is bounded,
        given up after ``send_timeout`` seconds."""

        def run() -> None:
            with self._connections().acquire(block=True, timeout=self.send_timeout / 5) as connection:
                call(connection=connection)

        with anyio.fail_after(self.send_timeout):
            await anyio.to_thread.run_sync(run, abandon_on_cancel=True)

    def _connections(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                bound = self.send_timeout / 5
                connection = self.app.connection_for_write()
                driver = connection.transport.driver_type
                timeouts = _TIMEOUTS.get(driver, ())
                if timeouts:
                    connection.release()
                    options = dict.fromkeys(timeouts, bound)
                    connection = self.app.connection_for_write(transport_options=options)
                self._pool = connection.Pool(limit=self.app.conf.broker_pool_limit or None)
            return self._pool

    async def revoke(self, task: Task) -> None:
        revoke = functools.partial(self.app.control.revoke, task.id, terminate=self.terminate)
        try:
            await self._over_broker(revoke)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            # Stored as cancelled: a worker started later discards it (it reads those at start).
            logger.warning("task %s cancelled; revoking it in Celery failed: %s", task.id, exc)


#: Transport options that bound each socket operation, by kombu driver type.
_TIMEOUTS: dict[str, tuple[str, ...]] = {
    "redis": ("socket_timeout", "socket_connect_timeout"),
    "amqp": ("read_timeout", "write_timeout"),
}


def _retry_policy() -> dict[str, float]:
    """Two quick retries of a send (Celery's default is three, up to a second apart)."""
    return {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def _unreachable(exc: BaseException) -> bool:
    """True for what a Celery broker that cannot be reached raises."""
    from kombu.exceptions import OperationalError

    return isinstance(exc, (OperationalError, OSError, TimeoutError))
