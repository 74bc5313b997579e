"""memory://: its options, and finished tasks expiring (the ids it remembers as expired are
bounded too). What every broker does: test_broker_contract.py."""

from __future__ import annotations

from typing import Any

import pytest

from sse_tasks import OutputChunk, Task, TaskState
from sse_tasks.brokers import MemoryBroker, broker_from_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("options", [{"retention": -1}, {"max_tasks": 0}, {"history": 0}])
def test_options_that_cannot_work_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        MemoryBroker(**options)


def test_memory_url_and_options_make_a_memory_broker() -> None:
    broker = broker_from_url("memory://", retention=5, max_tasks=3)
    assert isinstance(broker, MemoryBroker)
    assert (broker.retention, broker.max_tasks) == (5, 3)
    with pytest.raises(ValueError, match="unknown broker URL"):
        broker_from_url("mongodb://localhost")


async def finish(broker: MemoryBroker, task_id: str) -> None:
    queued = await broker.publish(Task(id=task_id, name="job"), "task.queued")
    assert queued is not None
    await broker.publish_output(queued.task, OutputChunk(task_id, 0, "output", "text"))
    done = await broker.publish(queued.task.evolve(state=TaskState.SUCCEEDED), "task.succeeded")
    assert done is not None


async def test_finished_tasks_beyond_max_tasks_expire_oldest_first_with_their_output() -> None:
    broker = MemoryBroker(max_tasks=2)
    for n in range(3):
        await finish(broker, f"t{n}")
    running = await broker.publish(Task(id="live", name="job"), "task.queued")
    assert running is not None
    assert await broker.get("t0") is None and await broker.output("t0") == []
    assert await broker.expired("t0")  # answered 410, not 404
    assert [t.id for t in await broker.list_tasks()] == ["live", "t2", "t1"]
    assert [c.text for c in await broker.output("t2")] == ["text"]


async def test_expired_ids_are_remembered_up_to_max_tasks() -> None:
    broker = MemoryBroker(retention=0, max_tasks=2)
    for n in range(5):
        await finish(broker, f"t{n}")
    assert await broker.list_tasks() == []
    remembered = [await broker.expired(f"t{n}") for n in range(5)]
    assert remembered == [False, False, False, True, True]  # the oldest are forgotten: 404


async def test_events_carry_this_brokers_ids_and_no_other_parses() -> None:
    one, other = MemoryBroker(), MemoryBroker()
    event = await one.publish(Task(id="t", name="job"), "task.queued")
    assert event is not None
    assert one.parse_event_id(event.id) == event.key == 1
    assert other.parse_event_id(event.id) is None  # another process's (a restarted server's) id
    assert await one.cursor() == event.id
