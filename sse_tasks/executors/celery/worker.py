"""The Celery side: signal handlers that report every task of an app to the Redis broker.

:func:`connect` is called once in the module that defines the Celery app, so it runs
in every process that sends the app's tasks and in every worker:

- a process that sends a task (``.delay()``, ``.apply_async()``, the hub) stores it
  ``queued`` once its message is sent (``after_task_publish``);
- a worker that receives a task the hub sent stores it ``queued`` (if the hub has not
  yet) before it can run, and discards, unrun, one the hub refused (it answered 503: its
  message arrived late) or that was cancelled meanwhile (``task_received``);
- the worker running it stores ``running`` (creating the task first if no hooked
  sender stored it), progress from ``update_state`` or :func:`sse_tasks.current_task`,
  output, and the outcome: ``succeeded`` with its result, ``failed`` with ``{type,
  message}``, ``cancelled`` when revoked, back to ``queued`` (``retry 2 of 3``) before
  a retry is sent;
- while a task runs, its worker process renews its lease; a worker killed mid-task
  leaves it ``failed`` (``WorkerLostError`` from Celery's main process, or
  ``WorkerLost`` once the lease lapses).
"""

from __future__ import annotations

import functools
import logging
import secrets
import sys
import weakref
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery import states as celery_states

from ..._core.errors import TaskCancelled
from ..._core.models import MAX_METADATA_BYTES, OutputChunk, Task, TaskState, utcnow
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import Keeper, SyncWriter, WorkerRun, error_of
from .cancel import cancellable
from .gate import admit_received, discard_cancelled
from .message import (
    CREATED_HEADER,
    HUB_HEADER,
    OWNER_HEADER,
    TAGS_HEADER,
    created_at_of,
    owner_of,
    retry_message,
    sent_snapshot,
    tags_of,
    valid_task,
)
from .meta import metadata_of, progress_of, route_update_state

logger = logging.getLogger("sse_tasks.celery")


#: The hook of each app connected in this process: ``connect`` is idempotent per app, and
#: Celery's signals, which the hooks listen to, are process-wide too.
_HOOKS: weakref.WeakKeyDictionary[Celery, CeleryHook] = weakref.WeakKeyDictionary()

_SIGNALS = (
    "after_task_publish",
    "before_task_publish",
    "worker_init",
    "task_received",
    "task_prerun",
    "task_success",
    "task_failure",
    "task_retry",
    "task_revoked",
    "task_postrun",
)


class CeleryHook:
    """Reports every task of ``app`` through the Redis broker at ``broker``; made by :func:`connect`."""

    def __init__(
        self,
        app: Celery,
        broker: str | RedisBroker,
        *,
        progress_interval: float = 0.1,
        check_interval: float = 0.1,
        start_delay: float = 0.05,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        if progress_interval < 0 or check_interval < 0 or start_delay < 0:
            raise ValueError("progress_interval, check_interval and start_delay must be >= 0")
        if max_output_bytes < 0 or max_output_chunks < 0:
            raise ValueError("max_output_bytes and max_output_chunks must be >= 0")
        self.app = app
        self.broker = broker if isinstance(broker, RedisBroker) else RedisBroker(broker)
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.start_delay = start_delay
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.max_metadata_bytes = max_metadata_bytes
        self.writer = SyncWriter(self.broker)
        self._unreachable = self.writer.unreachable
        #: Attempts running in this process (the same task id twice while a retry overlaps).
        self.runs: dict[int, WorkerRun] = {}
        #: The attempt each running task's request (Celery's per-execution context) is for.
        self._attempts: weakref.WeakKeyDictionary[Any, WorkerRun] = weakref.WeakKeyDictionary()
        self.keeper = Keeper(self.runs, self.writer)
        self._uid = f"sse_tasks-{secrets.token_hex(4)}"
        self._connected = False

    # -- wiring ----------------------------------------------------------------------

    def connect(self) -> CeleryHook:
        """Connect the signal handlers (idempotent)."""
        if not self._connected:
            for name in _SIGNALS:
                handler = _guarded(getattr(self, f"_on_{name}"), name)
                getattr(signals, name).connect(handler, weak=False, dispatch_uid=f"{self._uid}-{name}")
            self._connected = True
        return self

    def disconnect(self) -> None:
        """Disconnect the signal handlers."""
        for name in _SIGNALS:
            getattr(signals, name).disconnect(dispatch_uid=f"{self._uid}-{name}")
        self._connected = False

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app and not str(task.name).startswith("celery.")

    def _attempt(self, task: Any) -> WorkerRun | None:
        """The run of the attempt ``task`` is executing in this thread (its request's)."""
        request = getattr(task, "request", None)
        return None if request is None else self._attempts.get(request)

    def wrap_tasks(self) -> None:
        """Make a cancel a normal Celery outcome in each task (see :mod:`.cancel`); called
        as the worker starts, before Celery fixes each task's call."""
        for task in list(self.app.tasks.values()):
            if self._ours(task):
                cancelled = functools.partial(self._cancelled, task)
                task.run = cancellable(task.run, cancelled, functools.partial(_revoked, task))

    def _cancelled(self, task: Any) -> None:
        run = self._attempt(task)
        if run is not None:
            run.finish(TaskState.CANCELLED)

    # -- senders -----------------------------------------------------------------------

    def _on_after_task_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        """A task was sent: store it ``queued`` (the hub does so itself for its own)."""
        headers = headers or {}
        task_id, name = headers.get("id"), headers.get("task") or sender
        if not valid_task(task_id, name) or headers.get(HUB_HEADER) or headers.get("retries"):
            return
        if name not in self.app.tasks:
            return
        queued = Task(
            id=task_id,
            name=name,
            owner=owner_of(headers.get(OWNER_HEADER)),
            created_at=created_at_of(headers),
            tags=tags_of(headers.get(TAGS_HEADER), task_id),
        )
        try:
            self.writer.create(queued)
        except self._unreachable as exc:
            # The worker that runs it stores it then.
            logger.warning("task %s sent; not stored as queued yet: Redis unreachable (%s)", task_id, exc)

    def _on_before_task_publish(self, headers: Any = None, **_: Any) -> None:
        """Stamp a task's message with its creation time; a task running here that retries
        is stored ``queued`` before its new message can run."""
        if not isinstance(headers, dict):
            return
        task_id = headers.get("id")
        run = WorkerRun.current(task_id) if isinstance(task_id, str) else None
        if headers.get("retries"):
            if run is not None:
                run.requeue(retry_message(self.app, headers.get("task"), headers["retries"]))
        else:
            if run is not None:  # the task replaces itself (``self.replace``): the new message goes on
                run.hand_off()
            headers.setdefault(CREATED_HEADER, utcnow())

    # -- the worker's main process -------------------------------------------------------

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", self.app) is self.app:
            self.wrap_tasks()
            discard_cancelled(self.writer)

    def _on_task_received(self, request: Any = None, **_: Any) -> None:
        """A message reached this worker: one the hub sent is checked before it can run."""
        headers = getattr(request, "request_dict", None)
        if not isinstance(headers, dict) or not headers.get(HUB_HEADER) or headers.get("retries"):
            return  # only the hub refuses; a retry's task is stored already
        task, task_id = getattr(request, "task", None), getattr(request, "id", None)
        if (
            task is not None
            and isinstance(task_id, str)
            and self._ours(task)
            and valid_task(task_id, task.name)
        ):
            admit_received(self.writer, task_id, task.name, headers)

    def _on_task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        expired: bool = False,
        **_: Any,
    ) -> None:
        if sender is not None and not self._ours(sender):
            return
        task_id = getattr(request, "id", None)
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        run = self._live(task_id)
        if run is not None:
            run.finish(TaskState.CANCELLED, message=reason)
        elif isinstance(task_id, str):
            self._finish_elsewhere(task_id, sender, request, TaskState.CANCELLED, message=reason)

    # -- the process that runs the task ------------------------------------------------

    def _on_task_prerun(self, task_id: Any = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
        if task is None or not self._ours(task) or not valid_task(task_id, task.name):
            return
        self.keeper.ensure_started()
        route_update_state(task, lambda state, meta: self.update_state(self._attempt(task), state, meta))
        request = task.request
        first = not getattr(request, "retries", 0) and not (request.delivery_info or {}).get("redelivered")
        # A first attempt needs nothing stored: its snapshot is in its message. A retry or
        # a redelivery goes on from the stored one (its message, its output so far).
        stored = None if first else self._stored_or_queued(task_id, task)
        run = WorkerRun(
            stored or sent_snapshot(task_id, task.name, request),
            dict(kwargs or {}),
            self.writer,
            progress_interval=self.progress_interval,
            check_interval=self.check_interval,
            max_output_bytes=self.max_output_bytes,
            max_output_chunks=self.max_output_chunks,
            max_metadata_bytes=self.max_metadata_bytes,
            earlier_output=self._earlier_output(stored),
            wake=self.keeper.wake,
        )
        run.enter()
        self._attempts[request] = run  # a thread's own request: this attempt's
        self.runs[id(run)] = run
        if stored is not None and stored.terminal:  # cancelled while it waited: check() raises
            run.end(cancelled=stored.state is TaskState.CANCELLED)
            return
        # Stored within start_delay, or with this attempt's first event (a retry's: at once;
        # with Redis unreachable: once it answers).
        delay = self.start_delay if first else 0.0
        run.begin(run.task.evolve(state=TaskState.RUNNING, started_at=utcnow()), run.task, delay)

    def _earlier_output(self, stored: Task | None) -> list[OutputChunk]:
        """The output earlier attempts of a retried task stored: this attempt goes on from it."""
        if stored is None or not stored.output_chunks or stored.terminal:
            return []
        try:
            return self.writer.stored_output(stored.id)
        except self._unreachable:
            return []  # numbered on from the snapshot's count all the same

    def _stored_or_queued(self, task_id: str, task: Any) -> Task | None:
        """The stored snapshot; a task no hooked sender stored is stored ``queued`` first."""
        try:
            stored = self.writer.get(task_id)
            if stored is None:
                owner = owner_of(getattr(task.request, OWNER_HEADER, None))
                queued = Task(id=task_id, name=task.name, owner=owner)
                stored = self.writer.create(queued) or self.writer.get(task_id)
        except self._unreachable:
            return None
        return stored

    def _on_task_success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        run = self._run_of(sender)
        if run is None:
            return
        run.succeed(result)  # the task ran: never cancelled (postrun), failed if not JSON

    def _on_task_failure(
        self, sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any
    ) -> None:
        if sender is not None and not self._ours(sender):
            return
        if not isinstance(task_id, str):
            return
        run = self._attempt(sender)
        error = error_of(exception) if isinstance(exception, BaseException) else None
        if run is not None:
            if isinstance(exception, TaskCancelled) or run.cancelled:
                run.finish(TaskState.CANCELLED)
            else:
                run.finish(TaskState.FAILED, error=error)
        else:  # the worker's main process: the pool child was lost, or a hard time limit
            self._finish_elsewhere(
                task_id, sender, getattr(sender, "request", None), TaskState.FAILED, error=error
            )

    def _on_task_retry(self, request: Any = None, **_: Any) -> None:
        run = None if request is None else self._attempts.get(request)
        if run is not None and not run.ended:  # the retry was not sent through this process
            retries = int(getattr(request, "retries", 0) or 0) + 1
            run.requeue(retry_message(self.app, getattr(request, "task", None), retries))

    def _on_task_postrun(self, task: Any = None, state: Any = None, retval: Any = None, **_: Any) -> None:
        run = self._attempt(task)
        if run is None:
            return
        self.runs.pop(id(run), None)
        if run.requeued and state != celery_states.RETRY:
            # The retry's message was never sent (Celery rejected the task instead).
            run.fail_requeued(f"the retry could not be sent (Celery state {state})")
        elif not run.ended:
            if state == celery_states.REJECTED and getattr(retval, "requeue", False):
                run.requeue("requeued by the task")  # Reject(requeue=True): it comes back
            elif state in (celery_states.SUCCESS, celery_states.FAILURE):
                # Its outcome handler failed before it stored anything (it logged why): the
                # task ran to its end, so it ends failed, never cancelled.
                logger.warning(
                    "task %s: its outcome (Celery state %s) could not be stored; failed", run.task.id, state
                )
                why = "the task ran, but its outcome could not be stored (see the worker's log)"
                error = {"type": "RuntimeError", "message": why}
                if state == celery_states.FAILURE and isinstance(retval, BaseException):
                    error = error_of(retval)
                run.finish(TaskState.FAILED, error=error)
            elif state is None and (escaping := sys.exc_info()[1]) is not None:
                # It raised what Celery lets through (SystemExit, KeyboardInterrupt, a
                # BaseException of its own): this signal is sent as that goes up.
                run.finish(TaskState.FAILED, error=error_of(escaping))
            else:
                # Ignored or rejected by the task itself: Celery sent no outcome.
                message = f"ended in Celery state {state}" if state else None
                run.finish(TaskState.CANCELLED, message=message)
        run.leave()

    def _run_of(self, task: Any) -> WorkerRun | None:
        if task is None or not self._ours(task):
            return None
        return self._attempt(task)

    def _live(self, task_id: Any) -> WorkerRun | None:
        """The unfinished attempt of ``task_id`` running in this process, if any."""
        for run in list(self.runs.values()):
            if run.task.id == task_id and not run.ended:
                return run
        return None

    def _finish_elsewhere(
        self, task_id: str, task: Any, request: Any, state: TaskState, **changes: Any
    ) -> None:
        """Publish the outcome of a task that does not run in this process (the worker's main
        process: revoked, expired, its pool child lost). A task its sender has not stored yet
        (Celery may discard an expired message at once) is created with it."""
        try:
            stored = self.writer.get(task_id)
            if stored is not None and stored.terminal:
                return
            queued = None
            if stored is None:
                name = getattr(task, "name", None) or getattr(request, "task", None)
                if not isinstance(name, str) or not valid_task(task_id, name):
                    return
                stored = queued = sent_snapshot(task_id, name, request)
            final = stored.evolve(state=state, finished_at=utcnow(), **changes)
            self.writer.final(final, create=queued, retry_for=self.writer.outage_grace)
        except self._unreachable:
            logger.error("task %s: %s not published, Redis unreachable", task_id, state.value)

    def update_state(self, run: WorkerRun | None, state: Any, meta: Any) -> None:
        """Take progress from Celery's ``update_state`` of the attempt ``run``, and its
        other keys as metadata (merged; ``ValueError`` if not JSON or too large). A
        cancelled task stops here (:class:`~sse_tasks.TaskCancelled`), as at ``progress()``."""
        if run is None or state in celery_states.READY_STATES:
            return
        reported = progress_of(meta)
        if reported is not None:
            run.report(*reported)
        extra = metadata_of(meta)
        if extra:
            run.context.set_metadata({**run.context.metadata(), **extra})
        run.context.check()


def connect(
    app: Celery,
    broker: str | RedisBroker | None = None,
    *,
    progress_interval: float = 0.1,
    check_interval: float = 0.1,
    start_delay: float = 0.05,
    max_output_bytes: int = 1 << 20,
    max_output_chunks: int = 10_000,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> CeleryHook:
    """Report every task of the Celery ``app`` to the sse_tasks hub on the Redis ``broker``.

    Call it once in the module that defines the app, so that every process sending its
    tasks and every worker running them is hooked. ``broker`` is the hub's Redis URL
    (default: ``$SSE_TASKS_BROKER``), with the same options as the hub's. Progress is
    published at most once per ``progress_interval`` seconds per task (the latest value
    always); a running task's ``current_task().check()`` sees a cancel within
    ``check_interval`` seconds. A task's ``running`` is stored within ``start_delay``
    seconds of its start (sooner if it reports): one that ends sooner stores ``running``
    and its outcome in one round trip. A task's metadata is bounded by
    ``max_metadata_bytes`` encoded, as the hub's. Returns the hook; calling it again for the same app
    returns the same hook.
    """
    existing = _HOOKS.get(app)
    if existing is not None:
        return existing
    if broker is None:
        import os

        broker = os.environ.get("SSE_TASKS_BROKER") or ""
    if isinstance(broker, str) and not is_redis_url(broker):
        raise ValueError(
            f"sse_tasks.celery.connect needs the hub's Redis broker URL (redis://…), not {broker!r}"
        )
    hook = CeleryHook(
        app,
        broker,
        progress_interval=progress_interval,
        check_interval=check_interval,
        start_delay=start_delay,
        max_output_bytes=max_output_bytes,
        max_output_chunks=max_output_chunks,
        max_metadata_bytes=max_metadata_bytes,
    )
    _HOOKS[app] = hook
    return hook.connect()


def _revoked(task: Any) -> bool:
    """True if this worker process was told to revoke the task ``task`` is running."""
    from celery.worker import state as worker_state

    return getattr(task.request, "id", None) in worker_state.revoked


def _guarded(handler: Callable[..., None], name: str) -> Callable[..., None]:
    """A signal handler that never breaks the task or the sender (Celery would log a traceback)."""

    @functools.wraps(handler)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:
            logger.exception("sse_tasks: the %s handler failed", name)

    return guarded
