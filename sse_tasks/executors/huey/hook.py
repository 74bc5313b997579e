"""The worker side: Huey's signals and pre/post-execute hooks report every task of an app.

- ``SIGNAL_ENQUEUED`` fires in the process that enqueues (``task()``, ``.s()`` then
  ``huey.enqueue``, ``.schedule()``): the task is stored ``queued`` at once, with the
  enqueue time as its ``created_at`` (the hub stores its own sends itself).
- The pre-execute hook (in the worker thread, after Huey's own revoke check): the task
  is received (a task the hub refused with a 503, or one cancelled while it waited, is
  discarded with ``CancelExecution``), then runs as a :class:`WorkerRun` whose context
  is ``current_task()`` in its body; a cancel stops it at its next ``progress()`` /
  ``check()`` (the ``TaskCancelled`` becomes Huey's ``CancelExecution``, no retry).
- The post-execute hook publishes the outcome: ``succeeded`` with the return value,
  ``failed`` with the error, ``cancelled``, or back to ``queued`` when Huey retries it.
- ``SIGNAL_REVOKED`` / ``SIGNAL_EXPIRED`` (skipped by the consumer) end it ``cancelled``;
  ``SIGNAL_INTERRUPTED`` (the consumer stopped mid-task) ``failed``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from huey import Huey
from huey import signals as S
from huey.api import PeriodicTask
from huey.exceptions import CancelExecution

from ..._core.errors import TaskCancelled
from ..._core.models import OutputChunk, Task, TaskState, utcnow, valid_task_id
from ..._core.text import clean_text
from ..._runner.job import error_of
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...brokers.redis.sync import SyncWriter
from ...engines import Keeper, WorkerRun, WorkerWriter
from ...engines.tags import TAGS_KEY, sent_tags
from .tasks import FROM_HUB, OWNER_KEY, task_name

logger = logging.getLogger("sse_tasks.huey")

_HOOKS: WeakKeyDictionary[Huey, HueyHook] = WeakKeyDictionary()
_HOOK_NAME = "sse_tasks"
#: Set on a Huey task instance (never serialized): its body started; the hook discarded it.
_ENTERED = "_sse_tasks_entered"
_DISCARDED = "_sse_tasks_discarded"
_MESSAGES = {
    S.SIGNAL_REVOKED: "revoked",
    S.SIGNAL_EXPIRED: "expired",
    S.SIGNAL_CANCELED: "cancelled by a pre-execute hook",
}


class HueyHook:
    """Reports the tasks of one Huey app to the hub on the Redis ``broker``: see
    :func:`connect`."""

    def __init__(
        self,
        huey: Huey,
        broker: str | RedisBroker,
        *,
        progress_interval: float = 0.1,
        check_interval: float = 0.1,
        start_delay: float = 0.05,
        max_output_bytes: int = 1 << 20,
        max_output_chunks: int = 10_000,
    ) -> None:
        self.huey = huey
        # Made now, not with the writer: a bad URL is told where the app is made.
        self.broker = broker if isinstance(broker, RedisBroker) else RedisBroker(broker)
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.start_delay = start_delay
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self.runs: dict[int, WorkerRun] = {}
        self._attempts: dict[int, WorkerRun] = {}  # by id() of the Huey task instance
        self._lock = threading.Lock()
        self._writer: WorkerWriter | None = None
        self._keeper: Keeper | None = None

    @property
    def writer(self) -> WorkerWriter:
        """The process's writer to the hub's Redis (made at first use)."""
        writer = self._writer
        if writer is not None:
            return writer
        with self._lock:
            if self._writer is None:
                self._writer = SyncWriter(self.broker)
                self._keeper = Keeper(self.runs, self._writer)
            return self._writer

    @property
    def keeper(self) -> Keeper:
        """The process's lease and progress keeper (started by the first run, after a fork too)."""
        self.writer  # noqa: B018 - makes the keeper
        assert self._keeper is not None
        return self._keeper

    def connect(self) -> HueyHook:
        """Connect the hook's signal handlers and execute hooks to the app."""
        self.huey.signal(S.SIGNAL_ENQUEUED)(_guarded(self._on_enqueued, "enqueued"))
        self.huey.signal(S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED)(_guarded(self._on_skipped, "revoked"))
        self.huey.signal(S.SIGNAL_INTERRUPTED)(_guarded(self._on_interrupted, "interrupted"))
        self.huey.signal(S.SIGNAL_CANCELED)(_guarded(self._on_canceled, "canceled"))
        self.huey.pre_execute(_HOOK_NAME)(self._pre_execute)
        self.huey.post_execute(_HOOK_NAME)(_guarded(self._post_execute, "post-execute"))
        return self

    def close(self) -> None:
        """Stop the keeper and close the writer (the app's hooks stay connected)."""
        with self._lock:
            keeper, writer, self._keeper, self._writer = self._keeper, self._writer, None, None
        if keeper is not None:
            keeper.stop()
        if writer is not None:
            writer.close()

    # -- the enqueuing process -------------------------------------------------------

    def _on_enqueued(self, signal: str, task: Any) -> None:
        if not _ours(task) or getattr(task, FROM_HUB, False):
            return  # the hub stores its own (a retry is stored already: create does nothing)
        try:
            self.writer.create(Task(id=task.id, name=task_name(task), created_at=utcnow(), tags=_tags(task)))
        except self.writer.unreachable as exc:
            logger.warning("task %s enqueued; not stored as queued: Redis unreachable (%s)", task.id, exc)

    # -- the worker ------------------------------------------------------------------

    def _pre_execute(self, task: Any) -> None:
        if not _ours(task):
            return
        try:
            run = self._admit(task, *_take_sent(task))
        except CancelExecution:
            raise
        except Exception:
            logger.exception("sse_tasks: task %s not reported", getattr(task, "id", None))
            return
        self._attempts[id(task)] = run
        self.runs[id(run)] = run
        self.keeper.ensure_started()
        run.start(self.start_delay if run.task.state is TaskState.QUEUED and not run.task.message else 0.0)
        run.enter()
        task.execute = _cancellable(task, task.execute, self._escaped)

    def _admit(self, task: Any, tags: tuple[str, ...], owner: str | None) -> WorkerRun:
        """The run of ``task``, received: raises ``CancelExecution`` for one the hub refused
        or that was cancelled while it waited (Huey skips it)."""
        writer = self.writer
        stored: Task | None = None
        earlier: list[OutputChunk] = []
        try:
            # Stored already (by the hub once it sent it, or by the sender): the hub can no
            # longer refuse it, so one read does; else it is received (refused or stored).
            stored = writer.get(task.id)
            if stored is None:
                state = writer.receive(_queued(task, tags, owner))
                stored = writer.get(task.id) if state == TaskState.QUEUED.value else None
            else:
                state = stored.state.value
            if state == "refused":
                logger.warning("task %s was refused by the hub (503); discarded", task.id)
            if state != TaskState.QUEUED.value:
                setattr(task, _DISCARDED, True)
                raise CancelExecution(retry=False)
            if stored is not None and stored.output_chunks:
                earlier = writer.stored_output(task.id)  # a retry goes on from its output
        except writer.unreachable as exc:
            logger.warning("task %s: Redis unreachable, it runs unchecked (%s)", task.id, exc)
        if stored is None:
            stored = _queued(task, tags, owner)
        params = {k: v for k, v in (task.kwargs or {}).items() if k != "task" or v is not task}
        return WorkerRun(
            stored,
            params,
            writer,
            progress_interval=self.progress_interval,
            check_interval=self.check_interval,
            max_output_bytes=self.max_output_bytes,
            max_output_chunks=self.max_output_chunks,
            earlier_output=earlier,
            wake=self.keeper.wake,
        )

    def _post_execute(self, task: Any, value: Any, exception: BaseException | None) -> None:
        run = self._attempts.pop(id(task), None)
        if run is None:
            return
        try:
            self._publish(task, run, value, exception)
        finally:
            self.runs.pop(id(run), None)
            run.leave()

    def _publish(self, task: Any, run: WorkerRun, value: Any, exception: BaseException | None) -> None:
        if exception is None:
            run.succeed(value)
        elif task.retries:  # Huey retries it: its next attempt is queued
            total = getattr(type(task), "default_retries", 0) or task.retries
            attempt = max(1, total - task.retries + 1)
            run.requeue(f"retry {attempt} of {total}")
        elif isinstance(exception, CancelExecution):
            run.finish(TaskState.CANCELLED, message=None if run.cancelled else "cancelled by the task")
        else:
            run.finish(TaskState.FAILED, error=error_of(exception))

    def _take(self, task: Any) -> WorkerRun | None:
        """The run of ``task``, no longer this process's (its keeper stops renewing it)."""
        run = self._attempts.pop(id(task), None)
        if run is not None:
            self.runs.pop(id(run), None)
        return run

    def _escaped(self, task: Any, exc: BaseException) -> None:
        """The task raised a ``BaseException`` (``SystemExit``, …): Huey restarts the worker
        thread without its post-execute hooks, so the run ends ``failed`` here."""
        run = self._take(task)
        if run is None:
            return
        run.leave()
        try:
            run.finish(TaskState.FAILED, error=error_of(exc))
        except Exception:
            logger.exception("sse_tasks: task %s not reported", task.id)

    def _on_interrupted(self, signal: str, task: Any) -> None:
        run = self._take(task)
        if run is None:
            return
        why = "the Huey consumer stopped while the task ran"
        run.finish(TaskState.FAILED, error={"type": "WorkerLost", "message": why})

    def _on_canceled(self, signal: str, task: Any) -> None:
        """A pre-execute hook raised ``CancelExecution``: the task never ran; it ends
        ``cancelled`` (one the task raised itself is the post-execute hook's)."""
        if getattr(task, _ENTERED, False) or getattr(task, _DISCARDED, False):
            return
        run = self._take(task)
        if run is None:
            self._on_skipped(signal, task)
            return
        run.leave()
        run.finish(TaskState.CANCELLED, message=_MESSAGES[signal])

    def _on_skipped(self, signal: str, task: Any) -> None:
        """Revoked or expired in Huey (or cancelled by a pre-execute hook before ours): the
        consumer skips it; it ends ``cancelled``."""
        if not _ours(task):
            return
        writer = self.writer
        try:
            stored = writer.get(task.id)
            if stored is not None and stored.terminal:
                return
            queued = None
            if stored is None:
                stored = queued = Task(id=task.id, name=task_name(task), tags=_tags(task))
            message = _MESSAGES[signal]
            final = stored.evolve(state=TaskState.CANCELLED, finished_at=utcnow(), message=message)
            writer.final(final, create=queued, retry_for=writer.outage_grace)
        except writer.unreachable:
            logger.error("task %s: cancelled not published, Redis unreachable", task.id)


def connect(
    huey: Huey,
    broker: str | RedisBroker | None = None,
    *,
    progress_interval: float = 0.1,
    check_interval: float = 0.1,
    start_delay: float = 0.05,
    max_output_bytes: int = 1 << 20,
    max_output_chunks: int = 10_000,
) -> HueyHook:
    """Report every task of the Huey app ``huey`` to the sse_tasks hub on the Redis ``broker``.

    Call it once in the module that defines the app, so that every process enqueuing its
    tasks and every consumer running them is hooked. ``broker`` is the hub's Redis URL
    (default: ``$SSE_TASKS_BROKER``), with the same options as the hub's. Progress is
    published at most once per ``progress_interval`` seconds per task; a running task's
    ``current_task().check()`` sees a cancel within ``check_interval`` seconds; its
    ``running`` is stored within ``start_delay`` seconds of its start (sooner if it
    reports). Calling it again for the same app returns the same hook.
    """
    existing = _HOOKS.get(huey)
    if existing is not None:
        return existing
    if broker is None:
        broker = os.environ.get("SSE_TASKS_BROKER") or ""
    if isinstance(broker, str) and not is_redis_url(broker):
        raise ValueError(
            f"sse_tasks.huey.connect needs the hub's Redis broker URL (redis://…), not {broker!r}"
        )
    hook = HueyHook(
        huey,
        broker,
        progress_interval=progress_interval,
        check_interval=check_interval,
        start_delay=start_delay,
        max_output_bytes=max_output_bytes,
        max_output_chunks=max_output_chunks,
    )
    _HOOKS[huey] = hook
    return hook.connect()


def _ours(task: Any) -> bool:
    """A task the hook reports: not periodic, with an id the hub takes."""
    task_id = getattr(task, "id", None)
    return not isinstance(task, PeriodicTask) and valid_task_id(task_id)


def _queued(task: Any, tags: tuple[str, ...], owner: str | None) -> Task:
    """The ``queued`` snapshot of a task nobody stored (or that Redis could not tell)."""
    return Task(id=task.id, name=task_name(task), tags=tags, owner=owner)


def _tags(task: Any) -> tuple[str, ...]:
    """The tags a task's sender gave it: its :data:`TAGS_KEY` keyword argument."""
    kwargs = getattr(task, "kwargs", None)
    return sent_tags(kwargs.get(TAGS_KEY), task.id) if isinstance(kwargs, dict) else ()


def _take_sent(task: Any) -> tuple[tuple[str, ...], str | None]:
    """The tags (:func:`_tags`) and the owner the hub sent, taken out of the task's keyword
    arguments: the function never gets them."""
    tags = _tags(task)
    owner = None
    if isinstance(task.kwargs, dict):
        task.kwargs.pop(TAGS_KEY, None)
        sent = task.kwargs.pop(OWNER_KEY, None)
        owner = clean_text(str(sent)) if sent else None
    return tags, owner


def _cancellable(
    task: Any, execute: Callable[[], Any], escaped: Callable[[Any, BaseException], None]
) -> Callable[[], Any]:
    """``execute``, with our cooperative cancel (a ``BaseException`` Huey would let out of
    the worker) as Huey's ``CancelExecution``, never retried; any other ``BaseException``
    but ``KeyboardInterrupt`` (Huey's own stop, its interrupted signal), and an exception
    whose ``repr()`` fails (Huey's error result takes it before the post-execute hooks),
    is ``escaped``, then raised on."""

    def wrapped() -> Any:  # not functools.wraps: a copy of its attributes per task, unread
        setattr(task, _ENTERED, True)
        try:
            return execute()
        except TaskCancelled:
            raise CancelExecution(retry=False) from None
        except (Exception, KeyboardInterrupt) as exc:
            if not _representable(exc):
                escaped(task, exc)  # Huey's error result fails on it: no post-execute hook runs
            raise  # Huey's post-execute hooks and interrupted signal see these
        except BaseException as exc:
            escaped(task, exc)
            raise

    return wrapped


def _representable(exc: BaseException) -> bool:
    """True if ``repr(exc)`` works (Huey calls it for every error before its hooks)."""
    try:
        repr(exc)
    except BaseException:
        return False
    return True


def _guarded(handler: Callable[..., None], name: str) -> Callable[..., None]:
    """A handler that never breaks the task or its sender."""

    @functools.wraps(handler)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:
            logger.exception("sse_tasks: the Huey %s handler failed", name)

    return guarded
