"""An asyncio engine's run and keeper against a real redis-server: what a task that holds
the worker's event loop leaves in the store, and the hand-off between the keeper's thread
and the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import pytest
from _support import broker_url_of
from anyio import wait_all_tasks_blocked

from sse_tasks import Task, TaskState
from sse_tasks.brokers.redis import RedisBroker
from sse_tasks.engines import AsyncKeeper, AsyncRun, AsyncWriter, SyncWriter

pytestmark = pytest.mark.anyio

LEASE = 1.0
HOLD = 20.0  # the most a test holds the loop waiting for the keeper's thread


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the asyncio engines' keeper is asyncio's


@dataclass
class Worker:
    keeper: AsyncKeeper
    writer: AsyncWriter
    blocking: SyncWriter

    def run(self, task_id: str) -> AsyncRun:
        run = AsyncRun(Task(id=task_id, name="work"), {}, self.writer, self.keeper)
        self.keeper.runs[task_id] = run
        return run

    def events(self, task_id: str) -> list[str]:
        [log] = self.blocking.wire.send([("XRANGE", self.blocking.broker.keys.events, "-", "+")])
        fields = [dict(zip(flat[::2], flat[1::2], strict=True)) for _, flat in log]
        return [f[b"t"].decode().removeprefix("task.") for f in fields if f[b"k"] == task_id.encode()]

    def lease(self, task_id: str) -> float | None:
        [score] = self.blocking.wire.send([("ZSCORE", self.blocking.broker.keys.leases, task_id)])
        return None if score is None else float(score)

    def hold_until(self, done: Callable[[], bool]) -> None:
        """Hold the event loop (as blocking code in an async task does) until ``done()``."""
        deadline = time.monotonic() + HOLD
        while not done():
            assert time.monotonic() < deadline, "the keeper's thread did not act while the loop was held"
            time.sleep(0.01)


@pytest.fixture(params=["redis"])
async def worker(request: pytest.FixtureRequest) -> AsyncIterator[Worker]:
    broker = RedisBroker(f"{broker_url_of(request)}?lease={LEASE}")
    writer, blocking = AsyncWriter(broker), SyncWriter(broker)
    keeper = AsyncKeeper(writer, blocking)
    keeper.ensure_started()
    try:
        yield Worker(keeper, writer, blocking)
    finally:
        await keeper.stop()
        await writer.close()
        blocking.close()


async def test_a_held_loop_still_stores_running_and_renews_the_lease(worker: Worker) -> None:
    run = worker.run("held-1")
    run.begin(0.0)  # due now: the keeper's task would store it, but the loop is held
    worker.hold_until(lambda: worker.events("held-1") == ["queued", "running"])
    first = worker.lease("held-1")
    assert first is not None
    worker.hold_until(lambda: (worker.lease("held-1") or 0) > first)  # renewed from the thread
    assert run.task.state is TaskState.RUNNING and run.task.event_id  # the stored snapshot

    await run.finish(TaskState.SUCCEEDED, result=1)
    await worker.writer.settle()
    assert worker.events("held-1") == ["queued", "running", "succeeded"]
    assert worker.lease("held-1") is None


async def test_the_loop_writes_nothing_before_the_thread_has_stored_running(worker: Worker) -> None:
    run = worker.run("held-2")
    run.begin(0.0)
    run.output("output", "first words", None)
    start = run.overdue_start(time.monotonic())  # as the keeper's thread takes it
    assert start is not None
    assert run.overdue_start(time.monotonic()) is None  # taken once

    finishing = asyncio.ensure_future(run.finish(TaskState.SUCCEEDED, result=2))
    await wait_all_tasks_blocked()
    assert not finishing.done()  # waits for the thread's store: output needs a stored task
    stored = await anyio.to_thread.run_sync(lambda: worker.blocking.running(start[0], create=start[1]))
    await anyio.to_thread.run_sync(run.started_elsewhere, start, stored)
    await finishing
    await worker.writer.settle()
    assert worker.events("held-2") == ["queued", "running", "succeeded"]
    assert [chunk.text for chunk in await worker.writer.stored_output("held-2")] == ["first words"]


async def test_a_start_the_thread_could_not_store_is_stored_by_the_loop(worker: Worker) -> None:
    run = worker.run("held-3")
    run.begin(0.0)
    start = run.overdue_start(time.monotonic())
    assert start is not None
    run.started_elsewhere(start, None, failed=True)  # Redis did not answer the thread
    await run.finish(TaskState.SUCCEEDED, result=3)
    await worker.writer.settle()
    assert worker.events("held-3") == ["queued", "running", "succeeded"]


async def test_output_and_progress_wait_for_the_thread_to_store_running(worker: Worker) -> None:
    """Nobody stored the task: its output would be refused (and the run taken for
    cancelled) if it reached Redis before the ``running`` the thread is storing."""
    run = worker.run("held-4")
    run.begin(0.0)
    run.output("output", "first words", None)
    run.report(0.5, "half")
    start = run.overdue_start(time.monotonic())
    assert start is not None

    flushing = asyncio.ensure_future(run.flush())  # what the keeper does with output waiting
    await wait_all_tasks_blocked()
    assert not flushing.done()
    stored = await anyio.to_thread.run_sync(lambda: worker.blocking.running(start[0], create=start[1]))
    await anyio.to_thread.run_sync(run.started_elsewhere, start, stored)
    await flushing
    assert not run.cancelled
    assert worker.events("held-4") == ["queued", "running", "progress"]
    assert [chunk.text for chunk in await worker.writer.stored_output("held-4")] == ["first words"]


async def test_a_waiter_cancelled_during_the_hand_off_leaves_the_thread_unharmed(worker: Worker) -> None:
    """A job's timeout cancels its ``finish`` while it waits for the thread: the thread's
    hand-back still works, and the run can still end."""
    run = worker.run("held-5")
    run.begin(0.0)
    start = run.overdue_start(time.monotonic())
    assert start is not None
    finishing = asyncio.ensure_future(run.finish(TaskState.SUCCEEDED, result=5))
    await wait_all_tasks_blocked()
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    stored = await anyio.to_thread.run_sync(lambda: worker.blocking.running(start[0], create=start[1]))
    await anyio.to_thread.run_sync(run.started_elsewhere, start, stored)  # no InvalidStateError
    await run.finish(TaskState.FAILED, error={"type": "Timeout", "message": "too long"})
    await worker.writer.settle()
    assert worker.events("held-5") == ["queued", "running", "failed"]


async def test_a_start_whose_write_failed_is_stored_later(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only when Redis is unreachable: any failed write of ``running`` gives it back."""
    run = worker.run("held-6")
    run.begin(0.0)
    calls: list[Task] = []
    running = worker.writer.running

    async def once_refused(task: Task, **options: Any) -> Task | None:
        calls.append(task)
        if len(calls) == 1:
            raise RuntimeError("OOM command not allowed")
        return await running(task, **options)

    monkeypatch.setattr(worker.writer, "running", once_refused)
    with pytest.raises(RuntimeError):
        await run.flush()
    await run.finish(TaskState.SUCCEEDED, result=6)
    await worker.writer.settle()
    assert worker.events("held-6") == ["queued", "running", "succeeded"]


async def test_an_idle_keeper_still_checks_the_outcomes_it_sent(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no run left, the keeper still settles what it sent without waiting (a last
    outcome whose connection failed is sent again), at least every quarter lease."""
    settled, calls = anyio.Event(), []
    settle = worker.writer.settle

    async def counted() -> None:
        calls.append(time.monotonic())
        if len(calls) >= 2:
            settled.set()
        await settle()

    monkeypatch.setattr(worker.writer, "settle", counted)
    worker.keeper.wake()
    with anyio.fail_after(10 * LEASE):
        await settled.wait()
    assert not worker.keeper.runs
