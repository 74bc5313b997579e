"""The taskiq side: a middleware that reports every task of a broker to the hub's Redis.

Added once where the broker is defined (``broker.add_middlewares(StatusMiddleware(url))``),
so it runs in every process that sends the broker's tasks and in every worker:

- a process that sends a task (``.kiq()``, the hub) stamps its message with the time it
  was sent and stores it ``queued`` once it is sent (``post_send``; the hub does so itself);
- a worker about to run a task (``pre_execute``) checks it: one the hub refused (it
  answered 503) or that was cancelled while it waited is discarded unrun; the others
  are stored ``running`` (within ``start_delay``), with progress, output and outcome
  published by the worker's keeper task on its event loop, through the async writer;
- while a task runs, its worker renews its lease; a worker killed mid-task leaves it
  ``failed`` (``WorkerLost``) once the lease lapses.

taskiq has no revoke: a cancel is cooperative (the task's next ``progress()``/``check()``
raises ``TaskCancelled``), and a cancelled message still queued is discarded when taken.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from ..._core.context import CURRENT
from ..._core.errors import TaskCancelled
from ..._core.models import Task, TaskState, utc_time, utcnow, valid_task_id
from ..._core.text import clean_text
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import AsyncKeeper, AsyncRun, AsyncWriter, SyncWriter, error_of
from ...engines.tags import TAGS_KEY, sent_tags
from .progress import route_set_progress

logger = logging.getLogger("sse_tasks.taskiq")

#: Labels of the messages: the hub sent it (and stores ``queued`` itself), who submitted
#: it, when it was sent.
HUB_LABEL = "sse_tasks_hub"
OWNER_LABEL = "sse_tasks_owner"
CREATED_LABEL = "sse_tasks_created"
#: The task's tags: ``with_labels(sse_tasks_tags="user:42,report")`` (one string, the tags
#: separated by commas, as some brokers keep only strings; a list where labels stay JSON).
TAGS_LABEL = TAGS_KEY
_WRAPPED = "__sse_tasks_wrapped__"
#: A message whose task is stored so is not run: the hub refused it (503), or it is over.
_DISCARDED = frozenset(
    {"refused", TaskState.CANCELLED.value, TaskState.SUCCEEDED.value, TaskState.FAILED.value}
)


class Discarded(NoResultError):
    """A task refused by the hub or cancelled while it waited: not run, no result stored."""


class StatusMiddleware(TaskiqMiddleware):
    """Reports every task of the broker it is added to through the hub's Redis ``broker``
    (default ``$SSE_TASKS_BROKER``). Progress is published at most once per
    ``progress_interval`` seconds per task (the latest value always); a running task's
    ``current_task().check()`` sees a cancel within ``check_interval`` seconds; ``running``
    is stored within ``start_delay`` seconds (or with the task's first report or outcome)."""

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
        super().__init__()
        if broker is None:
            broker = os.environ.get("SSE_TASKS_BROKER") or ""
        if isinstance(broker, str) and not is_redis_url(broker):
            raise ValueError(f"sse_tasks.taskiq needs the hub's Redis broker URL (redis://…), not {broker!r}")
        if progress_interval < 0 or check_interval < 0 or start_delay < 0:
            raise ValueError("progress_interval, check_interval and start_delay must be >= 0")
        self.hub_broker = broker if isinstance(broker, RedisBroker) else RedisBroker(broker)
        self.progress_interval = progress_interval
        self.check_interval = check_interval
        self.start_delay = start_delay
        self.max_output_bytes = max_output_bytes
        self.max_output_chunks = max_output_chunks
        self._writer: AsyncWriter | None = None
        self._blocking: SyncWriter | None = None
        self._keeper: AsyncKeeper | None = None

    @property
    def writer(self) -> AsyncWriter:
        """This process's writer (its connections belong to the loop that first used it)."""
        if self._writer is None:
            self._writer = AsyncWriter(self.hub_broker)
        return self._writer

    @property
    def keeper(self) -> AsyncKeeper:
        if self._keeper is None:
            self._blocking = SyncWriter(self.hub_broker)
            self._keeper = AsyncKeeper(
                self.writer,
                self._blocking,
                progress_interval=self.progress_interval,
                check_interval=self.check_interval,
            )
        return self._keeper

    async def shutdown(self) -> None:
        if self._keeper is not None:
            await self._keeper.stop()
            self._keeper = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._blocking is not None:
            await asyncio.to_thread(self._blocking.close)
            self._blocking = None

    # -- senders -----------------------------------------------------------------------

    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels.setdefault(CREATED_LABEL, utcnow())
        run = None if self._keeper is None else self._keeper.runs.get(message.task_id)
        if run is not None and not run.ended:
            # A retry middleware re-sends the task under its id: this attempt goes back to
            # queued before the new message can run.
            retry = message.labels.get("_retries")
            most = message.labels.get("max_retries")
            text = f"retry {retry}" + (f" of {most}" if most is not None else "") if retry else "retry"
            await run.requeue(text)
        return message

    async def post_send(self, message: TaskiqMessage) -> None:
        if message.labels.get(HUB_LABEL) or not _valid(message):
            return
        try:
            await self.writer.create(_queued(message))
        except self.writer.unreachable as exc:
            logger.warning("task %s sent; not stored as queued: Redis unreachable (%s)", message.task_id, exc)

    # -- workers -------------------------------------------------------------------------

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if not _valid(message):
            return message
        self._guard(message.task_name)
        route_set_progress(self.broker.result_backend)
        queued = _queued(message)
        writer = self.writer
        run = AsyncRun(
            queued,
            dict(message.kwargs),
            writer,
            self.keeper,
            max_output_bytes=self.max_output_bytes,
            max_output_chunks=self.max_output_chunks,
        )
        received = False
        try:
            stored = None
            if message.labels.get(HUB_LABEL) and not message.labels.get("_retries"):
                state = await writer.receive(queued)
                received = state == TaskState.QUEUED.value
            else:
                stored = await writer.get(queued.id)
                state = None if stored is None else stored.state.value
                queued = stored or queued
        except writer.unreachable as exc:
            logger.warning("task %s received; not checked: Redis unreachable (%s)", queued.id, exc)
            state = TaskState.QUEUED.value
        if state in _DISCARDED:
            logger.warning("task %s is %s; discarded", queued.id, state)
            run.ended = True  # the wrapped task sees it and runs nothing
        run.task = queued
        if stored is not None:
            run.continue_from(stored)
        run.enter()
        if not run.ended:
            self.keeper.ensure_started()
            self.keeper.runs[queued.id] = run
            run.begin(self.start_delay, stored=received)
        return message

    def _guard(self, name: str) -> None:
        """Wrap the task's function (once) so a discarded message runs nothing; the receiver
        calls it after this middleware, and reads its signature through ``__wrapped__``."""
        task = self.broker.find_task(name)
        if task is None or getattr(task.original_func, _WRAPPED, False):
            return
        func: Callable[..., Any] = task.original_func
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                _admit()
                return await func(*args, **kwargs)

            guarded: Callable[..., Any] = guarded_async
        else:

            @functools.wraps(func)
            def guarded_sync(*args: Any, **kwargs: Any) -> Any:
                _admit()
                return func(*args, **kwargs)

            guarded = guarded_sync
        setattr(guarded, _WRAPPED, True)
        task.original_func = guarded

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        # This attempt's own run, from the context pre_execute entered: a retry's message,
        # already taken by this worker, holds the task id's slot in ``keeper.runs``.
        run = _this_attempt(message.task_id)
        if run is None:
            return
        if self.keeper.runs.get(message.task_id) is run:
            del self.keeper.runs[message.task_id]
        try:
            error = result.error
            if isinstance(error, TaskCancelled) or (error is not None and run.cancelled):
                await run.finish(TaskState.CANCELLED)
            elif error is not None:
                await run.finish(TaskState.FAILED, error=error_of(error))
            else:
                await run.succeed(result.return_value)
        finally:
            run.leave()


def _admit() -> None:
    context = CURRENT.get()
    sink = None if context is None else context.sink
    if isinstance(sink, AsyncRun) and sink.ended and sink.keeper.runs.get(sink.task.id) is not sink:
        raise Discarded()


def _this_attempt(task_id: str) -> AsyncRun | None:
    context = CURRENT.get()
    sink = None if context is None else context.sink
    return sink if isinstance(sink, AsyncRun) and sink.task.id == task_id else None


def _valid(message: TaskiqMessage) -> bool:
    return valid_task_id(message.task_id)


def _queued(message: TaskiqMessage) -> Task:
    labels = message.labels
    created = labels.get(CREATED_LABEL)
    owner = labels.get(OWNER_LABEL)
    return Task(
        id=message.task_id,
        name=message.task_name,
        owner=clean_text(str(owner)) if owner else None,
        created_at=utc_time(created) or utcnow(),
        tags=sent_tags(labels.get(TAGS_LABEL), message.task_id),
    )
