"""The Dramatiq side: a middleware that reports every message of a broker to the hub's Redis.

:func:`connect` (or ``broker.add_middleware(StatusMiddleware(url))``) is called once in the
module that sets up the broker, so it runs in every process that sends messages and in
every worker process:

- a process that enqueues a message (``actor.send()``) stores its task ``queued`` at once
  (``after_enqueue``); the hub stores its own;
- a worker that takes a message stores it ``queued`` unless stored (one round trip) and
  skips it (``SkipMessage``) if the hub refused it (it answered 503) or it was cancelled
  while it waited (``before_process_message``);
- the worker stores ``running``, progress and output from :func:`sse_tasks.current_task`,
  and the outcome (``after_process_message``): ``succeeded`` with the result, ``failed``
  with ``{type, message}``, ``cancelled`` after a cooperative abort; a retry of the
  Retries middleware is stored ``queued`` (``retry 2 of 20``) before it is enqueued;
- while a task runs, its worker process renews its lease; a worker killed mid-task leaves
  it ``failed`` (``WorkerLost``) once the lease lapses.

Dramatiq has no revoke: a running task stops at its next ``progress()``/``check()``
(which raise :class:`~sse_tasks.TaskCancelled`, added to each actor's ``throws`` so the
Retries middleware does not retry it), a waiting one is skipped when a worker takes it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, Retries, SkipMessage

from ..._core.errors import TaskCancelled
from ..._core.models import TaskState, utcnow, valid_task_id
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import Keeper, SyncWriter, WorkerRun, error_of
from .message import HUB_OPTION, queued_snapshot

logger = logging.getLogger("sse_tasks.dramatiq")


class StatusMiddleware(Middleware):
    """Reports every message of the broker it is added to through the hub's Redis ``broker``.

    ``progress_interval``: seconds between progress publishes per task (the latest value
    always); ``check_interval``: how soon a running task's ``check()`` sees a cancel;
    ``start_delay``: ``running`` is stored within this many seconds of the start (a task
    that ends sooner stores ``running`` and its outcome in one round trip).
    """

    def __init__(
        self,
        broker: str | RedisBroker | None = None,
        *,
        progress_interval: float = 0.1,
        check_interval: float = 0.1,
        start_delay: float = 0.05,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
    ) -> None:
        if progress_interval < 0 or check_interval < 0 or start_delay < 0:
            raise ValueError("progress_interval, check_interval and start_delay must be >= 0")
        if broker is None:
            broker = os.environ.get("SSE_TASKS_BROKER") or ""
        if isinstance(broker, str) and not is_redis_url(broker):
            raise ValueError(
                f"the sse_tasks middleware needs the hub's Redis broker URL (redis://…), not {broker!r}"
            )
        self.hub = broker if isinstance(broker, RedisBroker) else RedisBroker(broker)
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.start_delay = start_delay
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.writer = SyncWriter(self.hub)
        self._unreachable = self.writer.unreachable
        #: Attempts running in this process.
        self.runs: dict[int, WorkerRun] = {}
        self.keeper = Keeper(self.runs, self.writer)
        self._local = threading.local()  # the attempt each worker thread runs

    # -- actors ----------------------------------------------------------------------

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        """A cancel is no failure: the Retries middleware must not retry it (``TaskCancelled``,
        and ``dramatiq-abort``'s ``Abort`` when it is installed)."""
        throws = actor.options.get("throws") or ()
        throws = tuple(throws) if isinstance(throws, (tuple, list)) else (throws,)
        missing = tuple(kind for kind in _cancels() if kind not in throws)
        if missing:
            actor.options["throws"] = (*throws, *missing)

    # -- senders -----------------------------------------------------------------------

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        """A task running here retries: store it ``queued`` before its new message can run."""
        run = WorkerRun.current(message.message_id)
        if run is None or run.cancelled:
            return
        retries = message.options.get("retries")
        if retries:
            run.requeue(_retry_message(broker, message, int(retries)))

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        """A message was sent: store its task ``queued`` (the hub does so itself for its own)."""
        options = message.options
        if options.get(HUB_OPTION) or options.get("retries") or not valid_task_id(message.message_id):
            return
        try:
            self.writer.create(queued_snapshot(message))
        except self._unreachable as exc:
            logger.warning(
                "task %s sent; not stored as queued yet: Redis unreachable (%s)", message.message_id, exc
            )

    # -- the worker ----------------------------------------------------------------------

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Move this middleware first in a worker: Dramatiq calls the ``after_*`` hooks in
        reverse order, so its own then run last and see whether Retries retried a failure."""
        chain = broker.middleware
        if chain and chain[0] is not self and self in chain:
            # Safe while Dramatiq iterates the list: the ones after this one keep their places.
            chain.remove(self)
            chain.insert(0, self)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.keeper.ensure_started()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Not before: the worker waits for its running tasks, whose leases must be renewed.
        self.keeper.stop()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """A worker took a message: check it may run, then begin its attempt."""
        self._local.run = None
        if not valid_task_id(message.message_id):
            return
        queued = queued_snapshot(message)
        received = False
        try:
            state = self.writer.receive(queued)
            received = True
            retry = bool(message.options.get("retries"))
            stored = self.writer.get(queued.id) if retry else None
            earlier = self.writer.stored_output(queued.id) if stored and stored.output_chunks else []
        except self._unreachable as exc:
            # A worker keeps working through an outage of the hub's Redis: it runs unchecked.
            logger.warning("task %s received; not checked: Redis unreachable (%s)", queued.id, exc)
            state, stored, earlier = TaskState.QUEUED.value, None, []
        if state != TaskState.QUEUED.value:
            if state == "refused":
                logger.warning("task %s was refused by the hub (503); skipped", queued.id)
            else:
                logger.info("task %s is %s; skipped", queued.id, state or "gone")
            raise SkipMessage()
        run = _Run(
            _abortable(broker),
            stored or queued,
            dict(message.kwargs or {}),
            self.writer,
            progress_interval=self.progress_interval,
            check_interval=self.check_interval,
            max_output_bytes=self.max_output_bytes,
            max_output_chunks=self.max_output_chunks,
            earlier_output=earlier,
            wake=self.keeper.wake,
        )
        self.keeper.ensure_started()
        self.runs[id(run)] = run
        self._local.run = run
        run.enter()
        delay = 0.0 if retry else self.start_delay
        create = None if received else run.task  # received: stored, no queued snapshot to send
        run.begin(run.task.evolve(state=TaskState.RUNNING, started_at=utcnow()), create, delay)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        run = self._take(message)
        if run is None:
            return
        try:
            if exception is None:
                self._succeeded(run, result)
            elif isinstance(exception, _cancels()) or run.cancelled:
                run.finish(TaskState.CANCELLED)
            elif not run.ended:  # a retry was stored as it was enqueued (before_enqueue)
                run.finish(TaskState.FAILED, error=error_of(exception))
        finally:
            run.leave()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Skipped by a middleware after this one began it (``AgeLimit``, …): it never ran."""
        run = self._take(message)
        if run is not None:
            try:
                run.finish(TaskState.CANCELLED, message="skipped")
            finally:
                run.leave()

    def _take(self, message: Any) -> WorkerRun | None:
        run: WorkerRun | None = getattr(self._local, "run", None)
        if run is None or run.task.id != message.message_id:
            return None
        self._local.run = None
        self.runs.pop(id(run), None)
        return run

    def _succeeded(self, run: WorkerRun, result: Any) -> None:
        run.succeed(result)  # the task ran: it ends failed if not JSON, never cancelled


def connect(
    broker: dramatiq.Broker,
    hub: str | RedisBroker | None = None,
    **options: Any,
) -> StatusMiddleware:
    """Add a :class:`StatusMiddleware` reporting to the hub's Redis ``hub`` (default:
    ``$SSE_TASKS_BROKER``) to the Dramatiq ``broker``, and return it; calling it again for
    the same broker returns the middleware it has. ``options``: the middleware's.
    """
    for existing in broker.middleware:
        if isinstance(existing, StatusMiddleware):
            return existing
    middleware = StatusMiddleware(hub, **options)
    broker.add_middleware(middleware)
    return middleware


class _Run(WorkerRun):
    """An attempt whose message ``dramatiq-abort``'s ``Abortable`` (``abortable``, if the
    broker has one) may interrupt. Once its own thread sees the cancel (its ``check()`` is
    about to raise), the message is withdrawn from ``Abortable`` first: otherwise the
    ``Abort`` that the hub's revoke sends can land after the task has ended, in a middleware
    or in Dramatiq's loop, where nothing catches it and the worker thread dies."""

    def __init__(self, abortable: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._abortable = abortable
        self._thread = threading.get_ident()

    @property
    def cancelled(self) -> bool:
        cancelled = super().cancelled
        if cancelled and self._abortable is not None and threading.get_ident() == self._thread:
            abortable, self._abortable = self._abortable, None
            # Under Abortable's lock: an Abort already raised in this thread lands here,
            # in the task's body, and none can be raised after.
            abortable.manager.remove_abortable(self.task.id)
        return cancelled


def _abortable(broker: dramatiq.Broker) -> Any:
    """The broker's ``dramatiq_abort.Abortable`` middleware, if it has one."""
    for middleware in broker.middleware:
        if type(middleware).__name__ == "Abortable" and hasattr(middleware, "manager"):
            return middleware
    return None


def _cancels() -> tuple[type[BaseException], ...]:
    """What a cancelled task raises: ours, and ``dramatiq-abort``'s if it is installed."""
    try:
        from dramatiq_abort import Abort
    except ImportError:
        return (TaskCancelled,)
    return (TaskCancelled, Abort)


def _retry_message(broker: dramatiq.Broker, message: Any, retry: int) -> str:
    """``retry 2 of 20``: the ``queued`` message of a task that retries."""
    most = message.options.get("max_retries")
    if most is None:
        try:
            actor = broker.get_actor(message.actor_name)
            most = actor.options.get("max_retries")
        except Exception:
            most = None
    if most is None:
        retries = [m for m in broker.middleware if isinstance(m, Retries)]
        most = retries[0].max_retries if retries else None
    return f"retry {retry} of {most}" if most is not None else f"retry {retry}"
