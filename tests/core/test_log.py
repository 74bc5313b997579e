"""EventLog: the bounded ring streams read with cursors."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from sse_tasks import Task, TaskEvent
from sse_tasks._core.log import EventLog, PartitionedLog, PartKey, Vector, latest

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


async def test_a_lone_event_wakes_the_waiter_within_a_few_turns() -> None:
    log = EventLog()
    woken = anyio.Event()

    async def waiter() -> None:
        await log.wait(0)
        woken.set()

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await anyio.lowlevel.checkpoint()
        log.append(event(1))
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert woken.is_set()


async def test_a_busy_publisher_is_read_in_batches_without_waiting_for_it_to_stop() -> None:
    log = EventLog()
    batches: list[int] = []
    publishing = True

    async def reader() -> None:
        position = 0
        while publishing or position < log.head:
            await log.wait(position)
            batch = log.read(position)
            batches.append(len(batch))
            position += len(batch)

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        await anyio.lowlevel.checkpoint()
        with anyio.move_on_after(0.3):
            n = 0
            while True:  # one event per turn of the loop, like a task reporting progress
                n += 1
                log.append(event(n))
                await anyio.lowlevel.checkpoint()
        publishing = False
        log.close()
    assert sum(batches) == n
    assert len(batches) > 5  # woken while the publisher was still going (every ~2 ms)
    assert max(batches) > 1  # and each time it took what had piled up


async def record_wake_up(log: EventLog, woken_with: list[int]) -> None:
    """Wait on ``log`` from position 0; note its head when woken."""
    await log.wait(0)
    woken_with.append(log.head)


async def test_a_hold_keeps_the_wake_up_back_until_released() -> None:
    log = EventLog()
    woken_with: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(record_wake_up, log, woken_with)
        await anyio.wait_all_tasks_blocked()
        log.hold(30.0, 30.0)  # nothing pending: nothing held
        log.release()
        log.append(event(1))
        assert log.wake_pending
        log.hold(30.0, 30.0)  # a reader fetching more (no deadline within the test)
        for _ in range(5):  # turns that would have woken a log not held
            await anyio.lowlevel.checkpoint()
        assert woken_with == []
        log.append(event(2))  # what it fetched
        log.release()
        with anyio.fail_after(1):  # a turn without events wakes as usual
            while not woken_with:
                await anyio.lowlevel.checkpoint()
    assert woken_with == [2]  # both events in one wake-up
    assert not log.wake_pending


@pytest.mark.parametrize(("window", "quiet"), [(30.0, 0.01), (0.01, 30.0)])
async def test_a_held_wake_up_comes_after_a_quiet_spell_or_the_window(window: float, quiet: float) -> None:
    log = EventLog()
    woken = anyio.Event()

    async def waiter() -> None:
        await log.wait(0)
        woken.set()

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        log.append(event(1))
        log.hold(window, quiet)  # never released
        with anyio.fail_after(5):
            await woken.wait()
    assert not log.wake_pending
    log.release()


@pytest.mark.parametrize("arrives", [True, False])
async def test_a_held_wake_up_waits_for_an_expected_event_within_its_window(arrives: bool) -> None:
    """While ``expecting()`` (a write of this process is on its way) the quiet spell and
    the window do not wake the streams; the expected event, or the longer window, does."""
    log = EventLog()
    expected = anyio.Event()
    woken_with: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(record_wake_up, log, woken_with)
        await anyio.wait_all_tasks_blocked()
        log.append(event(1))
        expect_window = 30.0 if arrives else 1.0
        log.hold(0.001, 0.001, lambda: not expected.is_set(), expect_window)
        with anyio.move_on_after(0.02):  # past the quiet spell and the window: still held
            while not woken_with:
                await anyio.lowlevel.checkpoint()
        assert woken_with == []
        if arrives:
            log.append(event(2))  # the event it was waiting for
            expected.set()
        with anyio.fail_after(5):
            while not woken_with:
                await anyio.lowlevel.checkpoint()
    assert woken_with == [2 if arrives else 1]
    log.release()


async def test_close_wakes_a_held_log_at_once() -> None:
    log = EventLog()
    async with anyio.create_task_group() as group:
        group.start_soon(log.wait, 0)
        await anyio.wait_all_tasks_blocked()
        log.append(event(1))
        log.hold(30.0, 30.0)
        log.close()
        with anyio.fail_after(1):
            await log.wait(5)
    log.release()


async def test_waiters_that_are_cancelled_leave_nothing_behind() -> None:
    log = EventLog()
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(log.wait, 0)
        await anyio.wait_all_tasks_blocked()
        assert log.waiting == 50
        group.cancel_scope.cancel()
    assert log.waiting == 0  # a stream that disconnects while idle frees its waiter
    log.append(event(1))  # and nothing is woken for it
    assert not log.wake_pending


def test_streams_at_one_position_share_one_joined_chunk() -> None:
    log = EventLog()
    for n in range(1, 4):
        log.append(event(n))
    first = log.joined(0, log.read(0), "")
    assert first == b"".join(e.frame("") for e in log.read(0))
    assert log.joined(0, log.read(0), "") is first  # the next stream woken at 0: the same bytes
    assert log.joined(1, log.read(1), "") == b"".join(e.frame("") for e in log.read(1))
    assert log.joined(0, log.read(0, 2), "") == b"".join(e.frame("") for e in log.read(0, 2))
    assert log.joined(0, log.read(0), "/jobs") == b"".join(e.frame("/jobs") for e in log.read(0))


def test_streams_under_two_root_paths_woken_in_turn_each_share_their_chunk() -> None:
    """A hub followed at its mount and through a proxy's prefix at once: streams woken at
    one position alternate between the two root paths, and each still joins once."""
    log = EventLog()
    for n in range(1, 4):
        log.append(event(n))
    plain = log.joined(0, log.read(0), "")
    prefixed = log.joined(0, log.read(0), "/jobs")
    assert b'"/jobs/tasks/' in prefixed and b'"/jobs/tasks/' not in plain
    assert log.joined(0, log.read(0), "") is plain
    assert log.joined(0, log.read(0), "/jobs") is prefixed
    for n in range(20):  # many root paths keep the cache bounded, and every answer right
        root = f"/p{n}"
        assert log.joined(0, log.read(0), root) == b"".join(e.frame(root) for e in log.read(0))


def test_a_reader_behind_a_restart_is_told_why_until_the_ring_trims() -> None:
    log = EventLog(maxlen=2)
    assert log.behind == "fell behind the retained history"
    log.restart(0, "the broker's history was flushed or replaced")
    assert log.behind == "the broker's history was flushed or replaced"
    for key in range(1, 3):
        log.append(event(key))
    assert log.behind == "the broker's history was flushed or replaced"  # nothing trimmed yet
    log.append(event(3))
    assert log.behind == "fell behind the retained history"


def placed(partition: int, n: int) -> TaskEvent:
    return TaskEvent(
        f"{partition}-{n}", PartKey(partition, n), "task.progress", Task(id=f"t{partition}", name="n")
    )


def vector_name(vector: Vector) -> str:
    return "v" + ".".join(str(part) for part in vector.parts)


def test_a_partitioned_log_positions_each_event_and_resumes_per_partition() -> None:
    log = PartitionedLog(100, 2, vector_name)
    log.restart(Vector([0, 0]))
    for partition, n in [(0, 1), (1, 1), (1, 2), (0, 2), (1, 3)]:
        log.append(placed(partition, n))
    assert [e.position for e in log.read(log.first)] == ["v1.0", "v1.1", "v1.2", "v2.2", "v2.3"]
    assert [e.id for e in log.read(log.first)] == ["0-1", "1-1", "1-2", "0-2", "1-3"]  # their own ids
    assert log.position_after(PartKey(0, 1)) == log.first + 3  # partition 0's next event
    assert log.position_after(PartKey(1, 3)) == log.head
    assert log.position_after(PartKey(1, 4)) is None  # not read here (yet)
    assert log.position_after(PartKey(2, 1)) is None  # no such partition
    # A position another process sent (it had 0-2 before 1-2): start at the first event it
    # lacks, and skip what it has until the position past the last of those.
    assert log.resume(Vector([2, 1])) == (log.first + 2, log.first + 4)
    assert log.resume(Vector([2, 3])) == (log.head, log.head)
    assert log.resume(Vector([0, 0])) == (log.first, log.first)
    assert log.resume(Vector([0])) is None  # another partition count
    assert log.newest == Vector([2, 3]) and log.floor == Vector([0, 0])


def test_a_partitioned_log_knows_what_it_trimmed_in_each_partition() -> None:
    log = PartitionedLog(8, 2, vector_name)
    log.restart(Vector([0, 0]))
    for n in range(1, 21):
        log.append(placed(0, n))
    log.append(placed(1, 1))
    assert log.floor_in(0) is not None and log.floor_in(0) > 1
    assert log.floor_in(1) == 0  # nothing of partition 1 trimmed
    assert log.resume(Vector([1, 0])) is None  # partition 0's events after 1 are gone
    floor = log.floor_in(0)
    assert log.resume(Vector([floor, 0])) is not None
    assert log.position_after(PartKey(1, 0)) == log.first_in(1)


def test_a_partitioned_log_reaches_a_key_it_holds_nothing_up_to() -> None:
    log = PartitionedLog(10, 2, vector_name)
    log.restart(Vector([5, 5]))
    assert log.position_after(PartKey(0, 7)) is None  # newer than read here
    log.reach(PartKey(0, 7))  # the broker checked: nothing up to 7 is for this log
    assert log.position_after(PartKey(0, 7)) == log.head
    log.append(placed(0, 8))
    assert log.read(log.first)[0].position == "v8.5"
    log.restart(Vector([8, 9]), "flushed")
    assert len(log) == 0 and log.behind == "flushed" and log.vector == Vector([8, 9])
    with pytest.raises(ValueError):
        PartitionedLog(10, 0, vector_name)


async def test_a_partitioned_log_is_held_until_every_partitions_reader_releases_it() -> None:
    log = PartitionedLog(100, 2, vector_name)
    log.restart(Vector([0, 0]))
    woken_with: list[int] = []

    async def record() -> None:
        await log.wait(log.head)
        woken_with.append(len(log))

    async with anyio.create_task_group() as group:
        group.start_soon(record)
        await anyio.wait_all_tasks_blocked()
        log.append(placed(0, 1))
        log.hold_for(0, 30.0, 30.0)  # both readers fetch more
        log.hold_for(1, 30.0, 30.0, lambda: True)
        log.append(placed(1, 1))
        log.release_for(0)  # one is done: the other still fetches
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert woken_with == []
        log.release_for(1)
        with anyio.fail_after(1):
            while not woken_with:
                await anyio.lowlevel.checkpoint()
    assert woken_with == [2]  # both partitions' events in one wake-up


def test_a_partitioned_logs_oldest_held_key_and_latest_keys() -> None:
    log = PartitionedLog(8, 2, vector_name)
    log.restart(Vector([0, 0]))
    assert log.oldest_in(0) == 0  # nothing trimmed: the base
    for n in range(1, 21):
        log.append(placed(0, n))
    # Some trimmed: the oldest still held (where a reader's history joins the log).
    assert log.oldest_in(0) == log.read(log.first_in(0), 1)[0].key.key > log.floor_in(0)
    assert log.oldest_in(1) == 0
    assert latest([PartKey(0, 5), PartKey(1, 7), PartKey(0, 9)], log) == Vector([9, 7])
    assert latest([3, 9, 4], EventLog()) == 9
    # What reach() was told is never taken back by an older key of the partition.
    log.reach(PartKey(1, 50))
    log.append(placed(1, 40))
    assert log.newest_in(1) == 50 and log.vector.parts[1] == 50
