"""The worker side's writers against a real redis-server and a real Redis Cluster: the
asyncio one gives the same answers as the blocking one, read back through the hub's broker."""

from __future__ import annotations

import anyio.to_thread
import pytest
from _support import broker_url_of

from sse_tasks import OutputChunk, Task, TaskState
from sse_tasks._core.models import utcnow
from sse_tasks.brokers.redis import RedisBroker
from sse_tasks.brokers.redis.sync import SyncWriter
from sse_tasks.engines import AsyncWriter

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """The hub's Redis: a database of the session's redis-server, or the session's cluster."""
    return broker_url_of(request)


async def test_a_task_through_the_blocking_writer(url: str) -> None:
    broker = RedisBroker(url)
    writer = SyncWriter(RedisBroker(url))
    try:
        queued = Task(id="sync-1", name="work")
        assert await anyio.to_thread.run_sync(writer.receive, queued) == "queued"
        running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
        final = running.evolve(state=TaskState.SUCCEEDED, finished_at=utcnow(), result=1)
        stored = await anyio.to_thread.run_sync(lambda: writer.final(final, started=(running, None)))
        assert stored is not None
        got = await broker.get("sync-1")
        assert got is not None and got.result == 1 and got.event_id == stored.event_id
    finally:
        writer.close()
        await broker.close()


async def test_a_task_through_the_async_writer(url: str) -> None:
    broker = RedisBroker(url)
    writer = AsyncWriter(RedisBroker(url))
    try:
        queued = Task(id="async-1", name="work")
        assert await writer.receive(queued) == "queued"
        assert await writer.receive(queued) == "queued"  # stored already: its state
        running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
        assert (await writer.running(running)) is not None
        reported = await writer.progress(running.evolve(progress=0.5, message="half"))
        assert reported is not None and reported.event_type == "task.progress"
        event_id = await writer.output(OutputChunk("async-1", 0, "output", "hello"))
        assert event_id is not None
        assert [c.text for c in await writer.stored_output("async-1")] == ["hello"]
        await writer.renew(["async-1"])
        back = await writer.requeue(reported.evolve(state=TaskState.QUEUED, message="retry 1"))
        assert back is not None and back.state is TaskState.QUEUED
        again = back.evolve(state=TaskState.RUNNING, started_at=utcnow())
        final = again.evolve(state=TaskState.SUCCEEDED, finished_at=utcnow(), result=3, output_chunks=1)
        stored = await writer.final(final, started=(again, None))  # running and final, one trip
        assert stored is not None and stored.state is TaskState.SUCCEEDED
        assert await writer.finished("async-1")
        assert await writer.final(final.evolve(state=TaskState.FAILED)) is None  # final: never again
        got = await broker.get("async-1")
        assert got is not None and got.result == 3 and got.event_id == stored.event_id

        created = await writer.create(Task(id="async-2", name="work"))
        assert created is not None and created.state is TaskState.QUEUED
        cancelled = created.evolve(state=TaskState.CANCELLED, finished_at=utcnow())
        assert await writer.final(cancelled) is not None
        assert await writer.cancelled_ids() == ["async-2"]
        await writer.create(Task(id="async-4", name="work"))
        ids = ["async-1", "async-2", "async-4", "unknown"]
        assert await writer.finished_ids(ids) == {"async-1", "async-2"}  # one round trip
        assert await writer.finished_ids([]) == set()
        assert await writer.receive(Task(id="async-2", name="work")) == "cancelled"

        assert await broker.refuse("async-3")  # the hub answered 503 for it
        assert await writer.receive(Task(id="async-3", name="work")) == "refused"
        assert await writer.get("async-3") is None
    finally:
        await writer.close()
        await broker.close()
