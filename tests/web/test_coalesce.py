"""Coalescing a stream that fell behind: only progress a later snapshot supersedes is dropped."""

from __future__ import annotations

from sse_tasks._core.models import OUTPUT_EVENT, OutputChunk, Task, TaskEvent, TaskState
from sse_tasks.web.streams import coalesce


def _task(task_id: str, progress: float) -> Task:
    return Task(id=task_id, name="count", state=TaskState.RUNNING, progress=progress)


def _progress(n: int, task_id: str, progress: float) -> TaskEvent:
    return TaskEvent(f"e-{n}", n, "task.progress", _task(task_id, progress))


def _output(n: int, task_id: str, seq: int) -> TaskEvent:
    chunk = OutputChunk(task_id, seq, "output", f"word {seq}")
    return TaskEvent(f"e-{n}", n, OUTPUT_EVENT, _task(task_id, 0.5), chunk)


def test_progress_superseded_by_a_later_progress_of_its_task_is_dropped() -> None:
    events = [_progress(1, "a", 0.1), _progress(2, "b", 0.1), _progress(3, "a", 0.2)]
    assert [e.id for e in coalesce(events)] == ["e-2", "e-3"]


def test_output_is_never_dropped_and_supersedes_no_progress() -> None:
    events = [_progress(1, "a", 0.5), _output(2, "a", 0), _output(3, "a", 1)]
    assert [e.id for e in coalesce(events)] == ["e-1", "e-2", "e-3"]


def test_state_changes_are_never_dropped() -> None:
    done = TaskEvent("e-3", 3, "task.succeeded", Task(id="a", name="count", state=TaskState.SUCCEEDED))
    events = [TaskEvent("e-1", 1, "task.running", _task("a", 0.0)), _progress(2, "a", 0.5), done]
    assert [e.id for e in coalesce(events)] == ["e-1", "e-3"]
