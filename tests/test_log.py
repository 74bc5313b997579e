"""EventLog: the bounded ring streams read with cursors."""

from __future__ import annotations

import anyio
import pytest

from sse_tasks import Task, TaskEvent
from sse_tasks._log import EventLog

pytestmark = pytest.mark.anyio


def event(n: int) -> TaskEvent:
    return TaskEvent(str(n), n, "task.progress", Task(id="t", name="n"))


def test_positions_and_trimming() -> None:
    log = EventLog(maxlen=16)
    for n in range(1, 11):
        log.append(event(n))
    assert (log.first, log.head, len(log)) == (0, 10, 10)
    assert log.position_after(0) == 0
    assert log.position_after(4) == 4
    assert [e.key for e in log.read(log.position_after(8) or 0)] == [9, 10]
    assert log.position_after(10) == 10
    assert log.position_after(11) is None  # from the future: not this log's
    for n in range(11, 30):
        log.append(event(n))
    assert len(log) <= 16 and log.head == 29
    assert log.position_after(1) is None  # trimmed away: the caller resyncs
    assert [e.key for e in log.read(log.first, 2)] == [log.first + 1, log.first + 2]


def test_rejects_empty_ring() -> None:
    with pytest.raises(ValueError):
        EventLog(0)


async def test_wait_wakes_all_waiters_once_per_append() -> None:
    log = EventLog()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await log.wait(0)
        woken.append(i)

    async with anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(waiter, i)
        await anyio.wait_all_tasks_blocked()
        assert woken == []
        log.append(event(1))
    assert sorted(woken) == list(range(50))
    with anyio.fail_after(1):
        await log.wait(0)  # already there: returns at once


async def test_close_wakes_waiters() -> None:
    log = EventLog()
    async with anyio.create_task_group() as group:
        group.start_soon(log.wait, 0)
        await anyio.wait_all_tasks_blocked()
        log.close()
    assert log.closed
