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


async def test_a_start_and_its_outcome_are_one_compare_and_set(url: str) -> None:
    writer = SyncWriter(RedisBroker(url))
    try:
        queued = Task(id="merged-1", name="work")  # nobody stored it: the start creates it
        running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
        final = running.evolve(state=TaskState.SUCCEEDED, finished_at=utcnow(), result=1)
        stored = writer.final(final, started=(running, queued))
        assert stored is not None

        late = writer.create(Task(id="merged-2", name="work"))
        assert late is not None
        assert writer.final(late.evolve(state=TaskState.CANCELLED, finished_at=utcnow())) is not None
        running = late.evolve(state=TaskState.RUNNING, started_at=utcnow())
        outcome = running.evolve(state=TaskState.SUCCEEDED, finished_at=utcnow())
        assert writer.final(outcome, started=(running, None)) is None  # cancelled meanwhile: neither

        # A retry of a task nobody stored, before its start was stored: created, started, back.
        queued = Task(id="merged-3", name="work")
        running = queued.evolve(state=TaskState.RUNNING, started_at=utcnow())
        back = writer.requeue(
            running.evolve(state=TaskState.QUEUED, message="retry 1"), started=(running, queued)
        )
        assert back is not None and back.state is TaskState.QUEUED

        events = {task_id: logged(writer.broker, task_id) for task_id in ("merged-1", "merged-2", "merged-3")}
        assert {task_id: [f[b"t"] for _, f in found] for task_id, found in events.items()} == {
            "merged-1": [b"task.queued", b"task.running", b"task.succeeded"],
            "merged-2": [b"task.queued", b"task.cancelled"],
            "merged-3": [b"task.queued", b"task.running", b"task.queued"],
        }
        assert stored.event_id is not None and stored.event_id.endswith("-" + events["merged-1"][2][0])
        events_1 = events["merged-1"]
        assert b'"started_at"' in events_1[1][1][b"d"] and b'"running"' in events_1[1][1][b"d"]
    finally:
        writer.close()


def logged(broker: RedisBroker, task_id: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of ``task_id`` in the log of its partition, in order."""
    part = broker.part_of(task_id)
    reader = SyncWriter(part)
    try:
        [log] = reader.wire.send([("XRANGE", part.keys.events, "-", "+")])
    finally:
        reader.close()
    entries = [(sid.decode(), dict(zip(flat[::2], flat[1::2], strict=True))) for sid, flat in log]
    return [(sid, fields) for sid, fields in entries if fields[b"k"] == task_id.encode()]
