"""The Broker interface, proven on every broker (memory:// and a real Redis)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import pytest

from sse_tasks import OutputChunk, Task, TaskEvent, TaskState
from sse_tasks._core.log import PartitionedLog, reached
from sse_tasks.brokers import Broker, broker_from_url

pytestmark = pytest.mark.anyio


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    broker = broker_from_url(broker_url)
    await broker.start(lambda event: None)
    try:
        yield broker
    finally:
        await broker.close()


async def until_logged(broker: Broker, event: TaskEvent) -> None:
    """Wait until ``event`` reached the local log (a shared broker reads it back)."""
    with anyio.fail_after(5):
        while broker.log.newest is None or not reached(broker.log.newest, event.key):
            await broker.log.wait(broker.log.head)


async def publish(broker: Broker, task: Task, event_type: str) -> TaskEvent:
    event = await broker.publish(task, event_type)
    assert event is not None
    return event


async def test_publish_is_a_compare_and_set(broker: Broker) -> None:
    task = Task(id="t1", name="job")
    assert await broker.publish(task.evolve(state=TaskState.RUNNING), "task.running") is None  # unknown
    queued = await publish(broker, task, "task.queued")
    assert queued.task.event_id == queued.id and queued.task.event_type == "task.queued"
    running = await publish(broker, queued.task.evolve(state=TaskState.RUNNING), "task.running")
    done = await publish(broker, running.task.evolve(state=TaskState.SUCCEEDED, result=[1]), "task.succeeded")
    assert queued.key < running.key < done.key
    late = running.task.evolve(state=TaskState.CANCELLED)
    assert await broker.publish(late, "task.cancelled") is None  # terminal never changes
    stored = await broker.get("t1")
    assert stored is not None
    assert (stored.state, stored.result, stored.event_id) == (TaskState.SUCCEEDED, [1], done.id)


async def test_every_event_reaches_the_log_in_order(broker: Broker) -> None:
    """Each event once, in the order of its partition (a broker of one: all in order); the
    cursor is a position past every one of them."""
    start = broker.log.head
    events = [await publish(broker, Task(id=f"t{i}", name="job"), "task.queued") for i in range(20)]
    for event in events:
        await until_logged(broker, event)
    logged = broker.log.read(start)
    assert sorted(e.id for e in logged) == sorted(e.id for e in events)
    for earlier, later in itertools.combinations(logged, 2):  # (a scalar key, or one partition's)
        assert (
            getattr(earlier.key, "partition", 0) != getattr(later.key, "partition", 0)
            or earlier.key < later.key
        )
    if not isinstance(broker.log, PartitionedLog):
        assert [e.id for e in logged] == [e.id for e in events]
        assert await broker.cursor() == events[-1].id
    cursor = broker.parse_event_id(await broker.cursor())
    assert all(reached(cursor, e.key) for e in events)
    assert broker.parse_event_id(events[-1].id) == events[-1].key


async def test_read_back_returns_once_the_log_holds_every_event_published_here(broker: Broker) -> None:
    """The hub closes the log on shutdown after this: every stream still gets its final events."""
    for round in range(20):  # a shared broker's reader usually needs a turn more than publish
        event = await publish(broker, Task(id=f"r{round}", name="job"), "task.queued")
        with anyio.fail_after(6):
            await broker.read_back()
        assert reached(broker.log.newest, event.key)


async def test_events_written_close_together_wake_a_waiting_stream_once(
    broker: Broker, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task's queued, running and failed go out to each stream in one write (on Redis
    # each is a write of its own, read back by separate XREADs).
    if broker_url.startswith("redis"):  # wide margins for a busy machine
        from sse_tasks.brokers.redis import reader

        monkeypatch.setattr(reader, "HOLD_WINDOW", 5.0)
        monkeypatch.setattr(reader, "HOLD_QUIET", 0.5)
    log = broker.log
    start = log.head
    woken_with: list[int] = []

    async def stream() -> None:
        await log.wait(start)
        woken_with.append(log.head - start)

    async with anyio.create_task_group() as group:
        group.start_soon(stream)
        await anyio.wait_all_tasks_blocked()
        queued = await publish(broker, Task(id="t", name="job"), "task.queued")
        running = await publish(broker, queued.task.evolve(state=TaskState.RUNNING), "task.running")
        failed = running.task.evolve(state=TaskState.FAILED, error={"type": "E", "message": "m"})
        await publish(broker, failed, "task.failed")
        with anyio.fail_after(5):
            await until_logged(broker, queued)
    assert woken_with == [3]
    assert [e.type for e in log.read(start)] == ["task.queued", "task.running", "task.failed"]


@pytest.mark.parametrize("bad", ["", "x", "0", "1-2", "1-2-3", "-", "--", "a-b-c-d", "\u0663-1-1"])
async def test_foreign_and_malformed_ids_do_not_parse(broker: Broker, bad: str) -> None:
    await publish(broker, Task(id="t", name="job"), "task.queued")
    assert broker.parse_event_id(bad) is None


async def test_list_is_newest_first_and_filtered(broker: Broker) -> None:
    made: list[Task] = []
    for i, name in enumerate(["a", "b", "a", "b"]):
        made.append((await publish(broker, Task(id=f"t{i}", name=name), "task.queued")).task)
    failed = made[1].evolve(state=TaskState.FAILED, error={"type": "E", "message": "m"})
    await publish(broker, failed, "task.failed")
    assert [t.id for t in await broker.list_tasks()] == ["t3", "t2", "t1", "t0"]
    assert [t.id for t in await broker.list_tasks(name="a")] == ["t2", "t0"]
    assert [t.id for t in await broker.list_tasks(state=TaskState.FAILED)] == ["t1"]
    assert [t.id for t in await broker.list_tasks(limit=2)] == ["t3", "t2"]
    assert await broker.get("nope") is None
    assert not await broker.expired("nope")


async def test_the_observer_sees_every_event(broker_url: str) -> None:
    seen: list[str] = []
    broker = broker_from_url(broker_url)
    await broker.start(lambda event: seen.append(event.id))
    try:
        events = [await publish(broker, Task(id=f"t{i}", name="job"), "task.queued") for i in range(5)]
        await until_logged(broker, events[-1])
    finally:
        await broker.close()
    assert seen == [e.id for e in events]


async def test_output_is_kept_in_order_only_while_its_task_is_not_finished(broker: Broker) -> None:
    task = Task(id="t1", name="job")
    assert await broker.publish_output(task, OutputChunk("t1", 0, "output", "early")) is None  # unknown
    queued = await publish(broker, task, "task.queued")
    running = await publish(broker, queued.task.evolve(state=TaskState.RUNNING), "task.running")
    events = [
        await broker.publish_output(running.task, OutputChunk("t1", i, kind, f"{i} ", level))
        for i, (kind, level) in enumerate([("output", None), ("log", "info"), ("output", None)])
    ]
    assert [e.type if e else None for e in events] == ["task.output"] * 3
    done = await publish(
        broker, running.task.evolve(state=TaskState.SUCCEEDED, output_chunks=3), "task.succeeded"
    )
    assert await broker.publish_output(done.task, OutputChunk("t1", 3, "output", "late")) is None
    stored = await broker.output("t1")
    assert [(c.seq, c.kind, c.level, c.text) for c in stored] == [
        (0, "output", None, "0 "),
        (1, "log", "info", "1 "),
        (2, "output", None, "2 "),
    ]
    assert [c.event_id for c in stored] == [e.id for e in events if e]


async def test_output_kept_without_events_back_is_stored_and_followed_as_published(broker: Broker) -> None:
    """``keep_outputs`` (a task's output pump): the same chunks, stored and in the log for
    a follower, as ``publish_outputs`` keeps; False, keeping nothing, for an unknown or
    finished task."""
    task = Task(id="t1", name="job")
    chunks = [OutputChunk("t1", i, "output", f'{i} "é"\\\n', None) for i in range(50)]
    assert await broker.keep_outputs(task, chunks) is False  # unknown
    running = await publish(broker, task, "task.queued")
    running = await publish(broker, running.task.evolve(state=TaskState.RUNNING), "task.running")
    follow = await broker.follow_output(running.task)
    assert await broker.keep_outputs(running.task, []) is True
    assert await broker.keep_outputs(running.task, chunks) is True
    done = await publish(broker, running.task.evolve(state=TaskState.SUCCEEDED), "task.succeeded")
    await until_logged(broker, done)
    follow.close()
    position = broker.log.position_after(running.key)
    assert position is not None
    logged = [e for e in broker.log.read(position, 1000) if e.type == "task.output"]
    assert [e.frame() for e in logged] == [
        TaskEvent(c.event_id or "", e.key, "task.output", running.task, c).frame()
        for c, e in zip(await broker.output("t1"), logged, strict=True)
    ]
    assert [(c.seq, c.text) for c in await broker.output("t1")] == [(c.seq, c.text) for c in chunks]
    assert await broker.keep_outputs(done.task, chunks[:1]) is False  # finished: nothing kept
    assert len(await broker.output("t1")) == 50


async def test_a_batch_of_output_is_kept_whole_in_order_and_read_back_lazily(broker: Broker) -> None:
    task = Task(id="t1", name="job", tags=("a",))
    chunks = [OutputChunk("t1", i, "log" if i % 3 else "output", f"{i} é\n", None) for i in range(300)]
    assert await broker.publish_outputs(task, chunks) is None  # unknown: nothing kept
    queued = await publish(broker, task, "task.queued")
    running = await publish(broker, queued.task.evolve(state=TaskState.RUNNING), "task.running")
    assert await broker.publish_outputs(running.task, []) == []
    follow = await broker.follow_output(running.task)  # a stream here follows the task
    events = await broker.publish_outputs(running.task, chunks)
    assert events is not None and len(events) == 300
    assert all(a.key < b.key for a, b in itertools.pairwise(events))
    assert [e.chunk.seq if e.chunk else None for e in events] == list(range(300))
    await until_logged(broker, events[-1])
    follow.close()
    position = broker.log.position_after(running.key)
    assert position is not None
    logged = broker.log.read(position, 1000)
    # The log holds what another process reads: each chunk's event, its snapshot as of it.
    assert [e.id for e in logged] == [e.id for e in events]
    assert all(e.type == "task.output" and not e.terminal for e in logged)
    assert [(e.chunk.seq, e.chunk.text) if e.chunk else None for e in logged] == [
        (c.seq, c.text) for c in chunks
    ]
    assert {(e.task.id, e.task.state, e.task.tags) for e in logged} == {("t1", TaskState.RUNNING, ("a",))}
    assert logged[0].frame() == events[0].frame()
    done = await publish(broker, running.task.evolve(state=TaskState.SUCCEEDED), "task.succeeded")
    assert done.terminal
    assert await broker.publish_outputs(done.task, chunks[:1]) is None  # finished: nothing kept
    stored = await broker.output("t1")
    assert [(c.seq, c.text, c.event_id) for c in stored] == [
        (c.seq, c.text, e.id) for c, e in zip(chunks, events, strict=True)
    ]


async def test_metadata_and_tags_are_stored_and_tags_filter_the_list(broker: Broker) -> None:
    tagged = Task(id="m0", name="a", tags=("user:42", "team/x"), metadata={"done": 1, "note": "<b>"})
    await publish(broker, tagged, "task.queued")
    await publish(broker, Task(id="m1", name="a", tags=("user:7",)), "task.queued")
    other = await publish(broker, Task(id="m2", name="b", tags=("user:42",)), "task.queued")
    progressed = other.task.evolve(state=TaskState.RUNNING, metadata={"done": 2, "total": 3})
    await publish(broker, progressed, "task.running")
    stored = await broker.get("m0")
    assert stored is not None
    assert (stored.tags, stored.metadata) == (("user:42", "team/x"), {"done": 1, "note": "<b>"})
    second = await broker.get("m2")
    assert second is not None and second.metadata == {"done": 2, "total": 3}
    assert [t.id for t in await broker.list_tasks(tags=["user:42"])] == ["m2", "m0"]
    assert [t.id for t in await broker.list_tasks(tags=["user:42", "team/x"])] == ["m0"]
    assert [t.id for t in await broker.list_tasks(name="b", tags=["user:42"])] == ["m2"]
    assert [t.id for t in await broker.list_tasks(tags=["user:42"], limit=1)] == ["m2"]
    assert await broker.list_tasks(tags=["nobody"]) == []
