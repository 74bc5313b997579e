"""Streams over a partitioned log: processes interleave the partitions differently, and a
client resumes on any of them, exactly (the web layer with a fake backend, no broker)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from _fake_backend import FakeBackend

from sse_tasks import Task, TaskState
from sse_tasks._core.log import OutputFollow, PartitionedLog, PartKey, Vector
from sse_tasks._core.models import OutputChunk, TaskEvent, event_type_for
from sse_tasks.web.settings import WebSettings
from sse_tasks.web.streams import Resume, Selection, StreamPlan, global_stream, task_stream

pytestmark = pytest.mark.anyio

PARTITIONS = 3
#: One partition's history: (local key, task id, state) in order.
History = list[tuple[int, str, TaskState]]


def name(vector: Vector) -> str:
    return "v:" + ".".join("-" if part is None else str(part) for part in vector.parts)


def parse(event_id: str) -> Any | None:
    kind, _, rest = event_id.partition(":")
    if kind == "v":
        parts = rest.split(".")
        if len(parts) != PARTITIONS or not all(p.isdigit() for p in parts):
            return None
        return Vector([int(p) for p in parts])
    partition, _, local = rest.partition(".")
    if kind == "k" and partition.isdigit() and local.isdigit() and int(partition) < PARTITIONS:
        return PartKey(int(partition), int(local))
    return None


class Process(FakeBackend):
    """One process of a partitioned deployment: its own ring, fed in its own interleaving."""

    __slots__ = ()

    def __init__(self, maxlen: int = 1000) -> None:
        super().__init__()
        self.log = PartitionedLog(maxlen, PARTITIONS, name)
        self.log.restart(Vector([0] * PARTITIONS))

    def parse_event_id(self, event_id: str, /) -> Any | None:
        return parse(event_id)

    async def cursor(self) -> str:
        return name(self.log.vector)

    def feed(self, partition: int, local: int, task_id: str, state: TaskState) -> None:
        event_type = event_type_for(state)
        event_id = f"k:{partition}.{local}"
        task = Task(id=task_id, name="count", state=state, event_id=event_id, event_type=event_type)
        self.tasks[task_id] = task
        self.log.append(TaskEvent(task.event_id or "", PartKey(partition, local), event_type, task))


def histories(rng: random.Random, tasks: int = 12) -> list[History]:
    """Each partition's events: its tasks' queued, running, progress and succeeded."""
    parts: list[History] = [[] for _ in range(PARTITIONS)]
    states = [TaskState.QUEUED, TaskState.RUNNING, TaskState.RUNNING, TaskState.SUCCEEDED]
    pending = {f"t{n}": list(states) for n in range(tasks)}
    while pending:
        task_id = rng.choice(sorted(pending))
        partition = int(task_id[1:]) % PARTITIONS
        state = pending[task_id].pop(0)
        if not pending[task_id]:
            del pending[task_id]
        parts[partition].append((len(parts[partition]) + 1, task_id, state))
    return parts


def interleaving(rng: random.Random, parts: Sequence[History]) -> list[tuple[int, int, str, TaskState]]:
    """All events, each partition's in order, the partitions mixed at random."""
    cursors = [0] * len(parts)
    out = []
    while any(c < len(p) for c, p in zip(cursors, parts, strict=True)):
        partition = rng.choice([i for i, p in enumerate(parts) if cursors[i] < len(p)])
        local, task_id, state = parts[partition][cursors[partition]]
        cursors[partition] += 1
        out.append((partition, local, task_id, state))
    return out


async def frames(backend: Process, body: Any) -> list[tuple[str, str, str]]:
    """(id, type, task id) of each event a stream sends, until the closed log ends it."""
    backend.log.close()
    chunks = [body.opening]
    if body.follow is not None:
        chunks += [chunk async for chunk in body.follow]
    out = []
    for frame in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in fields:
            data = fields["data"]
            task_id = data.split('"id":"', 1)[1].split('"', 1)[0] if '"id":"' in data else ""
            out.append((fields.get("id", ""), fields["event"], task_id))
    return out


def stream(backend: Process, last_event_id: str | None, selection: Selection | None = None) -> StreamPlan:
    plan = StreamPlan(backend, WebSettings(), selection or Selection(), "")
    return plan


@pytest.mark.parametrize("seed", range(40))
async def test_a_global_stream_resumes_on_another_process_exactly(seed: int) -> None:
    """A stream on A stops anywhere; resumed on B, whose ring holds the same partitions in
    another order, it gets every event it lacks once, and none it has; and back on A."""
    rng = random.Random(seed)
    parts = histories(rng)
    a, b = Process(), Process()
    for backend in (a, b):
        for event in interleaving(rng, parts):
            backend.feed(*event)
    start = name(Vector([0] * PARTITIONS))
    on_a = await frames(a, await global_stream(stream(a, start), Resume(a, start)))
    every = {(p, local) for p, history in enumerate(parts) for local, _, _ in history}
    assert len(on_a) == len(every)
    cut = rng.randrange(len(on_a) + 1)
    had = on_a[:cut]
    resume_id = had[-1][0] if had else start
    b.log.reopen()
    on_b = await frames(b, await global_stream(stream(b, resume_id), Resume(b, resume_id)))
    assert not any(event_type == "reset" for _, event_type, _ in on_b)
    assert sorted(key for key in _keys(had + on_b, parts)) == sorted(every)  # each once

    # Every id a stream sent resumes it exactly, on either process.
    cut_b = rng.randrange(len(on_b) + 1)
    again_id = on_b[cut_b - 1][0] if cut_b else resume_id
    a.log.reopen()
    on_a_again = await frames(a, await global_stream(stream(a, again_id), Resume(a, again_id)))
    assert sorted(_keys(had + on_b[:cut_b] + on_a_again, parts)) == sorted(every)


def _keys(sent: list[tuple[str, str, str]], parts: list[History]) -> list[tuple[int, int]]:
    """The (partition, local key) of each event sent: told by its task and type, in the
    order of the task's partition (a task's events are sent in order, each once)."""
    by_task: dict[str, list[tuple[int, int]]] = {}
    for partition, history in enumerate(parts):
        for local, task_id, _ in history:
            by_task.setdefault(task_id, []).append((partition, local))
    taken: dict[str, int] = {}
    keys = []
    for _, _, task_id in sent:
        index = taken.get(task_id, 0)
        taken[task_id] = index + 1
        keys.append(by_task[task_id][index])
    return keys


async def test_a_stream_resumed_where_the_ring_no_longer_reaches_resets() -> None:
    rng = random.Random(7)
    parts = histories(rng, tasks=30)
    small = Process(maxlen=16)
    for event in interleaving(rng, parts):
        small.feed(*event)
    early = name(Vector([1] * PARTITIONS))
    sent = await frames(small, await global_stream(stream(small, early), Resume(small, early)))
    assert sent[0][1] == "reset"
    snapshots = sent[1:]
    assert {task_id for _, _, task_id in snapshots} == set(small.tasks)
    assert {event_id for event_id, _, _ in snapshots} == {name(small.log.vector)}


async def test_ids_from_another_layout_or_partition_count_reset() -> None:
    backend = Process()
    backend.feed(0, 1, "t0", TaskState.QUEUED)
    for bad in ("v:1.2", "v:1.2.3.4", "k:9.1", "v:a.b.c", "1-1"):
        resume = Resume(backend, bad)
        assert not resume.valid or bad == "v:1.2.3.4"
        sent = await frames(backend, await global_stream(stream(backend, bad), resume))
        backend.log.reopen()
        assert sent[0][1] == "reset", bad


async def test_a_task_stream_resumes_from_a_global_id_in_its_own_partition() -> None:
    """A per-task stream takes its task's partition of a global id: the events of its task
    after it, whatever other partitions the id was ahead or behind in."""
    backend = Process()
    backend.feed(1, 1, "t1", TaskState.QUEUED)
    backend.feed(0, 1, "t0", TaskState.QUEUED)
    backend.feed(1, 2, "t1", TaskState.RUNNING)
    backend.feed(0, 2, "t0", TaskState.RUNNING)
    backend.feed(1, 3, "t1", TaskState.SUCCEEDED)
    task = backend.tasks["t1"]
    global_id = name(Vector([2, 1, 0]))  # saw t1 queued only, and more of partition 0
    plan = stream(backend, global_id, Selection(task_ids=frozenset({"t1"}), output=True))
    plan.single = task
    sent = await frames(backend, await task_stream(plan, Resume(backend, global_id, task)))
    assert [(event_type, task_id) for _, event_type, task_id in sent] == [
        ("task.running", "t1"),
        ("task.succeeded", "t1"),
    ]
    assert Resume(backend, name(Vector([2, 3, 0])), task).key == PartKey(1, 3)
    # Another partition's event id says nothing of this task's: a reset, not a guess.
    assert Resume(backend, "k:0.1", task).key is None
    assert Resume(backend, "k:1.1", task).key == PartKey(1, 1)
    assert Resume(backend, "k:0.1").key == PartKey(0, 1)  # (a stream of many tasks resets it)


class Following(Process):
    """A process whose log holds each task's output only from its follow's key on."""

    __slots__ = ("read", "since")

    def __init__(self, since: dict[str, PartKey]) -> None:
        super().__init__()
        self.since = since
        self.read: list[str] = []

    async def follow_output(self, task: Task | None, /) -> OutputFollow:
        return OutputFollow(None if task is None else self.since[task.id])

    async def output(self, task_id: str, /) -> list[OutputChunk]:
        self.read.append(task_id)
        return []


async def test_chosen_tasks_in_several_partitions_read_the_output_the_log_lacks() -> None:
    """``?task=a&task=b&output=1`` resumed where the log lacks a's output (followed here
    from later than the client's position in a's partition) reads it from storage, though
    b's partition is quiet: each partition is judged on its own."""
    backend = Following({"t0": PartKey(0, 9), "t1": PartKey(1, 7)})
    backend.feed(0, 1, "t0", TaskState.RUNNING)
    backend.feed(1, 7, "t1", TaskState.RUNNING)
    selection = Selection(task_ids=frozenset({"t0", "t1"}), output=True)
    resume_id = name(Vector([1, 7, 0]))  # a's output from 2 on: not in this log
    plan = stream(backend, resume_id, selection)
    await global_stream(plan, Resume(backend, resume_id))
    assert "t0" in backend.read
