"""TaskHub: registration, running (async and threads), cancellation, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _support import finished, wait_for

from sse_tasks import (
    InProcessExecutor,
    InvalidRequest,
    NotFound,
    SSETasksError,
    Task,
    TaskCancelled,
    TaskContext,
    TaskEvent,
    TaskFinished,
    TaskGone,
    TaskHub,
    TaskState,
    Unavailable,
)
from sse_tasks._core.log import EventLog
from sse_tasks.brokers import MemoryBroker
from sse_tasks.demo import register_demo_tasks

pytestmark = pytest.mark.anyio


def test_register_refuses_a_taken_name_and_what_the_registry_refuses(hub: TaskHub) -> None:
    # Which signatures the registry refuses, and why: tests/core/test_registry.py.
    def two_contexts(a: TaskContext, b: TaskContext) -> None: ...

    with pytest.raises(ValueError, match="'sleep' is already registered"):
        hub.register(lambda: None, name="sleep")
    with pytest.raises(TypeError, match="more than one TaskContext"):
        hub.register(two_contexts)
    with pytest.raises(ValueError, match="timeout"):
        hub.register(lambda: None, name="t", timeout=0)
    assert "two_contexts" not in hub.registry and "t" not in hub.registry


async def test_params_are_checked_against_signature_before_queueing(running_hub: TaskHub) -> None:
    @running_hub.task(name="typed")
    def typed(ctx: TaskContext, a: int, b: list[str] | None = None, *, c: bool = False) -> None:
        pass

    for bad in ({}, {"a": "1"}, {"a": 1, "b": [1]}, {"a": 1, "c": 1}, {"a": 1, "z": 0}, [1]):
        with pytest.raises(InvalidRequest):
            await running_hub.submit_json("typed", bad)
    assert await running_hub.list_tasks() == []
    with pytest.raises(NotFound):
        await running_hub.submit("missing")
    task = await running_hub.submit("typed", a=1, b=["x"], c=True)
    assert (await finished(running_hub, task.id)).state is TaskState.SUCCEEDED


async def test_sync_task_runs_in_a_thread_and_reports_progress(make_hub: Any) -> None:
    hub: TaskHub = make_hub(progress_interval=0)
    seen_threads: list[int] = []

    @hub.task
    def crunch(ctx: TaskContext, steps: int) -> int:
        seen_threads.append(threading.get_ident())
        for i in range(steps):
            ctx.progress((i + 1) / steps, f"{i + 1}/{steps}")
        return steps

    async with hub:
        position = hub.broker.log.head
        task = await hub.submit(crunch, steps=50)
        done = await finished(hub, task.id)
        progress = [e.task.progress for e in hub.broker.log.read(position) if e.type == "task.progress"]
    assert seen_threads and seen_threads[0] != threading.get_ident()
    assert done.state is TaskState.SUCCEEDED and done.result == 50
    assert progress and progress == sorted(progress)
    assert done.message == "50/50"


async def test_cancel_async_task_in_place(running_hub: TaskHub) -> None:
    started = anyio.Event()
    cleaned = anyio.Event()

    @running_hub.task
    async def waits(ctx: TaskContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    task = await running_hub.submit(waits)
    await started.wait()
    cancelled = await running_hub.cancel(task.id)
    assert cancelled.state is TaskState.CANCELLED
    with anyio.fail_after(5):
        await cleaned.wait()
    assert (await running_hub.get(task.id)).state is TaskState.CANCELLED
    with pytest.raises(TaskFinished):
        await running_hub.cancel(task.id)


async def test_cancel_sync_task_raises_at_next_progress(running_hub: TaskHub) -> None:
    await cancel_then_progress(running_hub)


async def cancel_then_progress(hub: TaskHub) -> None:
    """Cancel a running sync task of ``hub``, then let it report: its progress() raises."""
    started = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    @hub.task
    def loops(ctx: TaskContext) -> None:
        started.set()
        release.wait(10)
        try:
            ctx.progress(0.5)
        except TaskCancelled as exc:
            outcome.append(type(exc).__name__)
            raise

    task = await hub.submit(loops)
    await anyio.to_thread.run_sync(started.wait, 10)
    assert (await hub.cancel(task.id)).state is TaskState.CANCELLED
    release.set()
    await wait_for(lambda: outcome)
    assert outcome == ["TaskCancelled"]
    assert (await hub.get(task.id)).state is TaskState.CANCELLED


async def test_a_sync_task_that_catches_exception_still_stops_when_cancelled(running_hub: TaskHub) -> None:
    started = threading.Event()
    stopped = threading.Event()
    swallowed: list[str] = []

    @running_hub.task
    def stubborn(ctx: TaskContext) -> None:
        try:
            while True:  # ends only through TaskCancelled
                try:
                    ctx.progress(0.5, "working")
                    ctx.check()
                except Exception as exc:  # the usual catch-all of a task body
                    swallowed.append(type(exc).__name__)
                started.set()
                threading.Event().wait(0.01)  # a thread's own pace, not synchronisation
        finally:
            stopped.set()

    task = await running_hub.submit(stubborn)
    await anyio.to_thread.run_sync(started.wait, 10)
    assert (await running_hub.cancel(task.id)).state is TaskState.CANCELLED
    assert await anyio.to_thread.run_sync(stopped.wait, 10), "the thread swallowed its cancellation"
    assert swallowed == []
    assert (await finished(running_hub, task.id)).state is TaskState.CANCELLED


async def test_an_async_task_that_catches_exception_still_stops_when_cancelled(running_hub: TaskHub) -> None:
    started = anyio.Event()
    stopped = anyio.Event()
    swallowed: list[str] = []

    @running_hub.task
    async def stubborn(ctx: TaskContext) -> None:
        try:
            # Shielded from anyio's cancellation: only the context's check can stop it.
            with anyio.CancelScope(shield=True):
                while True:
                    try:
                        ctx.progress(0.5, "working")
                        ctx.check()
                    except Exception as exc:
                        swallowed.append(type(exc).__name__)
                    started.set()
                    await anyio.sleep(0.01)
        finally:
            stopped.set()

    task = await running_hub.submit(stubborn)
    with anyio.fail_after(10):
        await started.wait()
    assert (await running_hub.cancel(task.id)).state is TaskState.CANCELLED
    with anyio.fail_after(10):
        await stopped.wait()
    assert swallowed == []
    assert (await finished(running_hub, task.id)).state is TaskState.CANCELLED


def test_cancellation_is_not_an_error() -> None:
    assert issubclass(TaskCancelled, BaseException)
    assert not issubclass(TaskCancelled, Exception)
    assert not issubclass(TaskCancelled, SSETasksError)
    with pytest.raises(TaskCancelled):
        try:
            raise TaskCancelled("cancelled")
        except Exception:  # pragma: no cover - must not catch it
            pytest.fail("except Exception caught a cancellation")


async def test_cancel_queued_task_never_runs(make_hub: Any) -> None:
    hub: TaskHub = make_hub(concurrency=1)
    ran: list[str] = []
    gate = anyio.Event()

    @hub.task
    async def first(ctx: TaskContext) -> None:
        await gate.wait()

    @hub.task
    async def second(ctx: TaskContext) -> None:
        ran.append("second")

    async with hub:
        blocker = await hub.submit(first)
        queued = await hub.submit(second)
        assert (await hub.cancel(queued.id)).state is TaskState.CANCELLED
        gate.set()
        await finished(hub, blocker.id)
        follow_up = await hub.submit(second)
        await finished(hub, follow_up.id)
        stored = await hub.get(queued.id)
    assert ran == ["second"]  # only the follow-up ran
    assert stored.state is TaskState.CANCELLED and stored.started_at is None


async def test_failures_timeouts_and_bad_results(make_hub: Any) -> None:
    hub: TaskHub = make_hub()

    @hub.task(timeout=0.2)
    async def slow(ctx: TaskContext) -> None:
        await anyio.sleep(30)

    @hub.task(timeout=0.2)
    def slow_sync(ctx: TaskContext) -> None:
        for _ in range(3000):
            ctx.check()
            threading.Event().wait(0.01)

    @hub.task
    async def odd(ctx: TaskContext) -> object:
        return object()

    @hub.task
    async def boom(ctx: TaskContext) -> None:
        raise KeyError("missing")

    async with hub:
        results = {}
        for fn in (slow, slow_sync, odd, boom):
            task = await hub.submit(fn)
            results[fn.__name__] = await finished(hub, task.id)
        survivor = await hub.submit("sleep", seconds=0)
        assert (await finished(hub, survivor.id)).state is TaskState.SUCCEEDED
    assert results["slow"].error == {"type": "TimeoutError", "message": "task exceeded its 0.2 s timeout"}
    assert results["slow_sync"].error is not None
    assert results["slow_sync"].error["type"] == "TimeoutError"
    assert results["odd"].state is TaskState.FAILED
    assert results["odd"].error is not None and results["odd"].error["type"] == "TypeError"
    assert results["boom"].error == {"type": "KeyError", "message": "'missing'"}
    assert all(r.state is TaskState.FAILED for r in results.values())


def _exits() -> None:
    sys.exit(3)  # a command line's parser, say


def _interrupted() -> None:
    raise KeyboardInterrupt


def _generator_exit() -> None:
    raise GeneratorExit


async def _awaits_a_future_cancelled_elsewhere() -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()  # a client library's request, cancelled by someone else
    await future


#: A task raising each (plain functions run in a worker thread), and the error type it ends with.
RAISED: dict[str, tuple[Callable[[], Any], str]] = {
    "sys.exit in a thread": (_exits, "SystemExit"),
    "KeyboardInterrupt in a thread": (_interrupted, "KeyboardInterrupt"),
    "GeneratorExit in a thread": (_generator_exit, "GeneratorExit"),
    "a future cancelled elsewhere": (_awaits_a_future_cancelled_elsewhere, "CancelledError"),
}


@pytest.mark.parametrize("raised", RAISED, ids=RAISED)
async def test_a_base_exception_a_task_raises_fails_it_and_the_hub_goes_on(
    make_hub: Any, raised: str
) -> None:
    """A task's own ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` or
    ``CancelledError`` is its failure: it neither stops the executor (later tasks ran
    no more) nor the hub (every later submit was refused)."""
    hub: TaskHub = make_hub()
    body, error_type = RAISED[raised]
    hub.register(body, name="raises")
    async with hub:
        failed = await finished(hub, (await hub.submit("raises")).id)
        after = [await hub.submit("sleep", seconds=0) for _ in range(3)]  # more than one worker's worth
        states = [(await finished(hub, task.id)).state for task in after]
    assert failed.state is TaskState.FAILED and failed.error is not None
    assert failed.error["type"] == error_type
    assert states == [TaskState.SUCCEEDED] * 3


class _Stopped(InProcessExecutor):
    """An executor whose workers have stopped (a fault): it takes no more jobs."""

    @property
    def accepting(self) -> bool:
        return False


async def test_a_stopped_executor_gets_503_and_nothing_is_stored(make_hub: Any) -> None:
    hub: TaskHub = make_hub(executor=_Stopped())
    async with hub:
        with pytest.raises(Unavailable, match="executor has stopped") as refused:
            await hub.submit("sleep", seconds=0)
        assert refused.value.code == "not_running"
        assert await hub.list_tasks() == []


async def test_a_surrogate_in_the_owner_is_cleaned(make_hub: Any) -> None:
    hub: TaskHub = make_hub()
    async with hub:
        task = await hub.submit_json("sleep", {"seconds": 0}, owner="user-\ud800")
        assert task.owner == "user-\ufffd"
        stored = await hub.get(task.id)
        assert stored.owner == "user-\ufffd"


@pytest.mark.parametrize(
    "option",
    [
        {"concurrency": 0},
        {"progress_interval": -1},
        {"max_output_bytes": -1},
        {"max_output_chunks": -1},
        {"max_queued": -1},
        {"shutdown_grace": -1},
    ],
    ids=lambda option: next(iter(option)),
)
def test_options_that_cannot_work_are_refused_when_the_hub_is_built(option: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        TaskHub("memory://", **option)


async def test_a_hub_whose_broker_cannot_start_raises_and_can_start_later() -> None:
    class Unreachable(MemoryBroker):
        refuse = True

        async def start(self, observer: Any) -> None:
            if self.refuse:
                raise ConnectionError("the broker is not there yet")
            await super().start(observer)

    broker = Unreachable()
    hub = TaskHub(broker)
    register_demo_tasks(hub)
    with pytest.raises(ConnectionError, match="not there yet"):
        async with hub:
            pytest.fail("the hub ran without its broker")
    with pytest.raises(Unavailable):
        await hub.submit("sleep", seconds=0)
    broker.refuse = False
    async with hub:
        task = await hub.submit("sleep", seconds=0)
        assert (await finished(hub, task.id)).state is TaskState.SUCCEEDED


async def test_a_running_hub_cannot_be_entered_again(running_hub: TaskHub) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        await running_hub.__aenter__()
    task = await running_hub.submit("sleep", seconds=0)  # and it goes on as it was
    assert (await finished(running_hub, task.id)).state is TaskState.SUCCEEDED


async def test_shutdown_of_a_hub_that_never_ran_does_nothing(hub: TaskHub) -> None:
    await hub.shutdown()
    assert not hub.closing
    async with hub:
        task = await hub.submit("sleep", seconds=0)
        assert (await finished(hub, task.id)).state is TaskState.SUCCEEDED


async def test_a_background_task_whose_response_ends_after_shutdown_began_never_runs(hub: TaskHub) -> None:
    ran: list[str] = []

    @hub.task
    def record(word: str) -> None:
        ran.append(word)

    async with hub:
        tracked = await hub.background(record, "late")
        await hub.shutdown()
        await tracked()  # what Starlette does once the response is sent
        final = await finished(hub, tracked.id)
    assert final.state is TaskState.CANCELLED and final.message == "server shutting down"
    assert ran == []


async def test_output_from_a_sync_tasks_thread_is_kept_in_order(make_hub: Any) -> None:
    hub: TaskHub = make_hub()

    @hub.task
    def writes(ctx: TaskContext, n: int) -> int:
        for i in range(n):
            ctx.output(f"{i} ")
            if i % 10 == 9:
                ctx.log(f"{i + 1} written", level="debug")
        return n

    async with hub:
        task = await hub.submit(writes, n=50)
        done = await finished(hub, task.id)
        chunks = await hub.broker.output(task.id)
    assert done.state is TaskState.SUCCEEDED and done.output_chunks == 55
    assert [c.seq for c in chunks] == list(range(55))
    assert "".join(c.text for c in chunks if c.kind == "output") == "".join(f"{i} " for i in range(50))
    assert [c.text for c in chunks if c.kind == "log"] == [f"{i} written" for i in range(10, 51, 10)]


async def test_progress_rejects_out_of_range(running_hub: TaskHub) -> None:
    @running_hub.task
    async def bad(ctx: TaskContext) -> None:
        ctx.progress(1.5)

    task = await running_hub.submit(bad)
    done = await finished(running_hub, task.id)
    assert done.error is not None and done.error["type"] == "ValueError"


async def test_background_form_runs_only_when_called(running_hub: TaskHub) -> None:
    ran = anyio.Event()
    got: list[str] = []

    async def print_msg(ctx: TaskContext, name: str) -> str:
        got.append(f"Hello {name}~")
        ran.set()
        return name

    tracked = await running_hub.background(print_msg, "Ithome")
    assert tracked.is_async  # Starlette must call it on the loop, not in a thread
    assert tracked.task.state is TaskState.QUEUED
    assert (await running_hub.get(tracked.id)).state is TaskState.QUEUED
    assert not ran.is_set()
    await tracked()  # what Starlette does after sending the response
    done = await finished(running_hub, tracked.id)
    assert got == ["Hello Ithome~"]
    assert done.name == "print_msg" and done.result == "Ithome"


def forever_task(hub: TaskHub) -> tuple[Any, anyio.Event]:
    """A task of ``hub`` that runs until it is cancelled, and the event it sets as it starts."""
    started = anyio.Event()

    @hub.task
    async def forever(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    return forever, started


async def test_shutdown_cancels_running_and_queued_then_refuses(make_hub: Any) -> None:
    hub: TaskHub = make_hub(concurrency=1, shutdown_grace=0.1)
    forever, started = forever_task(hub)

    async with hub:
        running = await hub.submit(forever)
        queued = await hub.submit(forever)
        await started.wait()
        with anyio.fail_after(10):
            await hub.shutdown()
        for task_id in (running.id, queued.id):
            task = await hub.get(task_id)
            assert task.state is TaskState.CANCELLED
            assert task.message == "server shutting down"
        with pytest.raises(Unavailable) as refused:
            await hub.submit(forever)
        assert refused.value.code == "shutting_down"
        assert hub.broker.log.closed


class LateLog(MemoryBroker):
    """A broker whose log gets an event some time after ``publish`` returns, as Redis's
    does (its reader reads the write back): here, final events wait for ``read_back``."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[TaskEvent] = []
        self.observe: Any = None

    async def start(self, observer: Any) -> None:
        self.observe = observer
        await super().start(lambda event: None if event.terminal else observer(event))

    async def publish(self, task: Task, event_type: str) -> TaskEvent | None:
        if not task.terminal:
            return await super().publish(task, event_type)
        log, self.log = self.log, EventLog(self.log.maxlen)  # the event goes astray
        try:
            event = await super().publish(task, event_type)
        finally:
            self.log = log
        if event is not None:
            self.held.append(event)
        return event

    async def read_back(self) -> None:
        await anyio.lowlevel.checkpoint()  # the reader's next turn
        for event in self.held:
            self.log.append(event)
            self.observe(event)
        self.held.clear()


async def test_cancel_stops_a_run_of_this_process_before_the_broker_reads_the_cancel_back() -> None:
    hub = TaskHub(LateLog())
    async with hub:
        with anyio.fail_after(15):
            await cancel_then_progress(hub)


async def test_shutdown_closes_the_log_once_it_holds_the_final_events_published_here() -> None:
    """A stream ends once the log is closed and read: it must still carry the task's end."""
    hub = TaskHub(LateLog(), shutdown_grace=0.1)
    forever, started = forever_task(hub)

    async with hub:
        running = await hub.submit(forever)
        await started.wait()
        with anyio.fail_after(10):
            await hub.shutdown()
        log = hub.broker.log
        assert log.closed
        ends = [e for e in log.read(log.first) if e.task.id == running.id and e.terminal]
        assert [e.type for e in ends] == ["task.cancelled"]


async def test_a_refused_submission_never_runs_and_never_appears(make_hub: Any) -> None:
    """A 503 (queue full, shutting down) means that run never happens and no task exists."""
    hub: TaskHub = make_hub(concurrency=1, max_queued=1, shutdown_grace=5)
    ran: list[str] = []
    started, release = anyio.Event(), anyio.Event()

    @hub.task
    async def record(ctx: TaskContext, tag: str) -> None:
        ran.append(tag)
        started.set()
        await release.wait()

    async with hub:
        first = await hub.submit(record, tag="first")
        with anyio.fail_after(10):
            await started.wait()
        waiting = await hub.submit(record, tag="waiting")  # the queue holds one
        with pytest.raises(Unavailable) as full:
            await hub.submit(record, tag="queue full")
        assert full.value.code == "queue_full"
        release.set()
        for task in (first, waiting):
            assert (await finished(hub, task.id)).state is TaskState.SUCCEEDED
        await hub.shutdown()
        with pytest.raises(Unavailable) as closing:
            await hub.submit(record, tag="shutting down")
        assert closing.value.code == "shutting_down"
        assert {task.id for task in await hub.list_tasks()} == {first.id, waiting.id}
    assert ran == ["first", "waiting"]


async def test_shutdown_lets_tasks_finish_within_grace(make_hub: Any) -> None:
    hub: TaskHub = make_hub(shutdown_grace=10)
    started = anyio.Event()

    @hub.task
    async def short(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep(0.2)

    async with hub:
        task = await hub.submit(short)
        await started.wait()
        await hub.shutdown()
        assert (await hub.get(task.id)).state is TaskState.SUCCEEDED


async def test_finished_tasks_expire_then_gone(make_hub: Any) -> None:
    hub: TaskHub = make_hub(max_tasks=2)
    async with hub:
        ids = []
        for _ in range(3):
            task = await hub.submit("fail")
            await finished(hub, task.id)
            ids.append(task.id)
        with pytest.raises(TaskGone):
            await hub.get(ids[0])
        assert (await hub.get(ids[2])).state is TaskState.FAILED
        with pytest.raises(NotFound):
            await hub.get("never-existed")


async def test_concurrency_limit(make_hub: Any) -> None:
    hub: TaskHub = make_hub(concurrency=2)
    running = 0
    peak = 0
    gate = anyio.Event()
    two_running = anyio.Event()

    @hub.task
    async def hold(ctx: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_running.set()
        await gate.wait()
        running -= 1

    async with hub:
        tasks = [await hub.submit(hold) for _ in range(5)]
        await two_running.wait()
        states = [(await hub.get(t.id)).state for t in tasks]
        assert states.count(TaskState.RUNNING) == 2
        assert states.count(TaskState.QUEUED) == 3
        gate.set()
        for task in tasks:
            assert (await finished(hub, task.id)).state is TaskState.SUCCEEDED
    assert peak == 2


async def test_progress_is_rate_limited_but_latest_value_published(make_hub: Any) -> None:
    hub: TaskHub = make_hub(progress_interval=0.3)
    reported = anyio.Event()
    release = anyio.Event()

    @hub.task
    async def chatty(ctx: TaskContext) -> None:
        for i in range(1, 1001):
            ctx.progress(i / 1000, f"{i}")
            if i % 100 == 0:
                await anyio.lowlevel.checkpoint()
        reported.set()
        await release.wait()

    async with hub:
        position = hub.broker.log.head
        task = await hub.submit(chatty)
        await reported.wait()
        # Within one interval the latest value must come out, without the task doing more.
        log = hub.broker.log
        with anyio.fail_after(5):
            while True:
                events = [e for e in log.read(position) if e.type == "task.progress"]
                if events and events[-1].task.message == "1000":
                    break
                await log.wait(log.head)
        release.set()
        done = await finished(hub, task.id)
    assert len(events) < 20  # 1000 calls, a handful of events
    assert events[-1].task.progress == 1.0
    assert done.state is TaskState.SUCCEEDED


async def test_finished_tasks_expire_after_retention(make_hub: Any) -> None:
    hub: TaskHub = make_hub(retention=0)
    async with hub:
        task = await hub.submit("fail")
        await finished(hub, task.id)
        with pytest.raises(TaskGone):
            await hub.get(task.id)


async def test_progress_from_a_thread_the_task_started(make_hub: Any) -> None:
    hub: TaskHub = make_hub(progress_interval=0)
    seen = threading.Event()

    @hub.task
    def spawns(ctx: TaskContext) -> str:
        helper = threading.Thread(target=ctx.progress, args=(0.5, "from my own thread"))
        helper.start()
        helper.join(10)
        # Ending now could fold the report into the final snapshot (as it should): stay
        # until its own progress event is out, so the test sees that event.
        if not seen.wait(10):
            raise TimeoutError("no progress event was published")
        return "ok"

    async with hub:
        log = hub.broker.log
        position = log.head
        task = await hub.submit(spawns)

        def reports() -> list[tuple[float | None, str | None]]:
            events = [e for e in log.read(position) if e.type == "task.progress"]
            return [(e.task.progress, e.task.message) for e in events]

        with anyio.fail_after(10):
            while not reports():
                await log.wait(log.head)
        seen.set()
        done = await finished(hub, task.id)
    assert reports() == [(0.5, "from my own thread")]
    assert done.state is TaskState.SUCCEEDED
    assert done.message == "from my own thread"


async def test_a_hub_can_run_again_after_shutdown(make_hub: Any) -> None:
    hub: TaskHub = make_hub()
    for _ in range(2):
        async with hub:
            task = await hub.submit("sleep", seconds=0)
            assert (await finished(hub, task.id)).state is TaskState.SUCCEEDED


async def test_a_task_finished_elsewhere_stops_its_local_run(running_hub: TaskHub) -> None:
    started = anyio.Event()
    stopped = anyio.Event()

    @running_hub.task
    async def long(ctx: TaskContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    task = await running_hub.submit(long)
    await started.wait()
    current = await running_hub.get(task.id)
    # What a surviving worker publishes when it thinks this one has died.
    lost = current.evolve(state=TaskState.FAILED, error={"type": "WorkerLost", "message": "lease expired"})
    assert await running_hub.broker.publish(lost, "task.failed") is not None
    with anyio.fail_after(10):
        await stopped.wait()
    final = await running_hub.get(task.id)
    assert final.state is TaskState.FAILED
    assert final.error == {"type": "WorkerLost", "message": "lease expired"}


def test_a_hub_refuses_to_run_outside_asyncio() -> None:
    """The stream path is asyncio's: entered without a running asyncio loop (on trio, say),
    a hub says so instead of failing later."""
    hub = TaskHub("memory://")
    entering = hub.__aenter__()
    with pytest.raises(RuntimeError, match="runs on asyncio"):
        entering.send(None)
    entering.close()
