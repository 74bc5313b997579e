"""What ``follow`` yields for the events of a per-task stream, resets included; task URLs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_tasks import OutputChunk, Task, TaskState
from sse_tasks._core.following import Following, FollowingTasks, MalformedAnswer, split_task_url


def snapshot(event_id: str, state: str = "running") -> tuple[str, str, str]:
    data = {"id": "t", "name": "generate", "state": state, "created_at": "2026-01-01T00:00:00Z"}
    return (f"task.{'succeeded' if state == 'succeeded' else 'started'}", event_id, json.dumps(data))


def chunk(event_id: str, seq: int, kind: str = "output") -> tuple[str, str, str]:
    data: dict[str, Any] = {"id": "t", "seq": seq, "kind": kind, "text": f"w{seq} "}
    if kind == "log":
        data["level"] = "info"
    return ("task.output", event_id, json.dumps(data))


def feed(following: Following, events: list[tuple[str, str, str]]) -> list[Task | OutputChunk]:
    items = [following.feed(*event) for event in events]
    return [item for item in items if item is not None]


def test_a_reset_replays_nothing_twice_and_drops_nothing() -> None:
    following = Following(None, output=True)
    first = feed(following, [snapshot("5"), chunk("5~0", 0), chunk("5~1", 1), chunk("7", 2)])
    assert [type(i).__name__ for i in first] == ["Task", "OutputChunk", "OutputChunk", "OutputChunk"]
    assert following.last_event_id == "7"
    # The server lost the history: reset, the current snapshot, the whole output again.
    reset = ("reset", "7", '{"reason": "fell behind"}')
    again = [reset, snapshot("9"), *(chunk(f"9~{n}", n) for n in range(5)), chunk("10", 5, "log")]
    items = feed(following, [*again, snapshot("11", "succeeded")])
    assert [i.seq for i in items if isinstance(i, OutputChunk)] == [3, 4, 5]
    assert [i.event_id for i in items if isinstance(i, Task)] == ["9", "11"]
    assert following.finished and following.last_event_id == "11"


def test_the_snapshot_repeated_after_a_reset_is_not_yielded_again() -> None:
    following = Following(None, output=False)
    assert [i.event_id for i in feed(following, [snapshot("5"), chunk("6", 0)])] == ["5"]
    assert feed(following, [("reset", "6", "{}"), snapshot("5"), chunk("5~0", 0)]) == []


def test_resuming_after_a_replayed_chunk_counts_the_chunks_up_to_it_as_held() -> None:
    following = Following("5~3", output=True)
    items = feed(following, [chunk("5~3", 3), chunk("5~4", 4), snapshot("5", "succeeded")])
    assert [getattr(i, "seq", None) for i in items] == [4, None]  # the terminal snapshot: not held yet
    assert following.finished


def test_without_output_chunks_are_skipped_but_still_resumed_after() -> None:
    following = Following(None, output=False)
    assert [i.state for i in feed(following, [snapshot("1"), chunk("2", 0)]) if isinstance(i, Task)] == [
        TaskState.RUNNING
    ]
    assert following.last_event_id == "2"


@pytest.mark.parametrize(
    "event",
    [
        ("task.output", "1", "not json"),
        ("task.output", "1", '{"id": "t", "seq": "0", "kind": "output", "text": "x"}'),
        ("task.output", "1", '{"id": "t", "seq": 0, "kind": "shout", "text": "x"}'),
        ("task.output", "1", '{"id": "t", "seq": -1, "kind": "output", "text": "x"}'),
        ("task.output", "1", '{"seq": 0, "kind": "output", "text": "x"}'),
        ("task.started", "1", '{"id": "t", "state": "sideways"}'),
        ("task.started", "1", "[]"),
    ],
)
def test_malformed_events_are_refused(event: tuple[str, str, str]) -> None:
    with pytest.raises(MalformedAnswer):
        Following(None, output=True).feed(*event)


def test_split_task_url() -> None:
    assert split_task_url("http://h:1/tasks/abc") == ("http://h:1", "abc")
    assert split_task_url("https://h/jobs/tasks/abc/events") == ("https://h/jobs", "abc")
    assert split_task_url("http://h/tasks/abc/") == ("http://h", "abc")
    # A percent-encoded id is the id: the client quotes it again (once).
    assert split_task_url("http://h/tasks/job%201/events") == ("http://h", "job 1")
    assert split_task_url("http://h/tasks/caf%C3%A9") == ("http://h", "café")
    for bad in (
        "http://h/",
        "http://h/tasks/",
        "ftp://h/tasks/a",
        "http://h/tasks/a/b/c",
        "http:///tasks/1",
        "http://h/tasks/%ff",
    ):
        with pytest.raises(ValueError, match="not a task URL"):
            split_task_url(bad)


def state_of(task_id: str, state: str, progress: float | None = None, **extra: Any) -> dict[str, Any]:
    data = {"id": task_id, "name": "count", "state": state, "created_at": "2026-01-01T00:00:00Z"}
    return {**data, "progress": progress, **extra}


def event(event_id: str, data: dict[str, Any]) -> tuple[str, str, str]:
    kind = "progress" if data["state"] == "running" and data["progress"] is not None else data["state"]
    return (f"task.{kind}", event_id, json.dumps(data))


def test_events_after_the_cursor_older_than_the_list_are_skipped() -> None:
    # The cursor is taken before the list is read: the events right after it may show
    # less than the listed snapshots (the list read them already).
    following = FollowingTasks(None, output=False)
    listed = [
        Task.from_record(state_of("a", "running", 0.5)),
        Task.from_record(state_of("b", "succeeded", 1.0)),
        Task.from_record(state_of("c", "queued")),
    ]
    painted = following.paint(listed, "cursor-1")
    assert [(t.id, t.event_id) for t in painted] == [("a", "cursor-1"), ("b", "cursor-1"), ("c", "cursor-1")]
    events = [
        event("2", state_of("a", "running")),  # older than the list: skipped
        event("3", state_of("b", "running", 0.5)),  # b is finished: skipped
        event("4", state_of("c", "queued")),  # the listed change itself: skipped
        event("5", state_of("a", "running", 0.25)),  # still older
        event("6", state_of("a", "running", 0.5)),  # the listed change itself
        event("7", state_of("a", "running", 0.75)),  # news
        event("8", state_of("c", "running")),  # news
        event("9", state_of("b", "succeeded", 1.0)),  # b's own last event: a repeat
        event("10", state_of("d", "queued")),  # a task the list did not have
    ]
    yielded = [following.feed(*e) for e in events]
    assert [(t.id, t.event_id) for t in yielded if isinstance(t, Task)] == [
        ("a", "7"),
        ("c", "8"),
        ("d", "10"),
    ]
    assert following.last_event_id == "10"
    # Once caught up, the stream is exact: everything for a and c is yielded.
    assert following.feed(*event("11", state_of("a", "running", 0.75, message="x"))) is not None


def test_a_change_the_list_did_not_show_is_yielded_and_ends_the_filtering() -> None:
    following = FollowingTasks(None, output=False)
    following.paint([Task.from_record(state_of("a", "running", 0.5, metadata={"done": 5}))], "c")
    # Same state and progress, other metadata: not known to be older, so yielded; from
    # then on every event is (the list's own change follows it, so the caller ends right).
    first = following.feed(*event("2", state_of("a", "running", 0.5, metadata={"done": 4})))
    again = following.feed(*event("3", state_of("a", "running", 0.5, metadata={"done": 5})))
    assert isinstance(first, Task) and isinstance(again, Task)
    assert again.metadata == {"done": 5}


def test_a_reset_forgets_the_list_and_yields_every_snapshot_after_it() -> None:
    following = FollowingTasks(None, output=True)
    following.paint([Task.from_record(state_of("a", "succeeded", 1.0))], "c")
    assert following.feed("reset", "", '{"reason": "fell behind"}') is None
    after = following.feed(*event("9", state_of("a", "succeeded", 1.0)))
    assert isinstance(after, Task) and after.event_id == "9"
    out = following.feed(
        "task.output", "10", json.dumps({"id": "b", "seq": 3, "kind": "output", "text": "x"})
    )
    assert isinstance(out, OutputChunk) and out.seq == 3
    assert following.last_event_id == "10"


def test_resuming_from_an_event_id_paints_nothing() -> None:
    following = FollowingTasks("42", output=False)
    assert following.last_event_id == "42"
    chunk_event = (
        "task.output",
        "43",
        json.dumps({"id": "b", "seq": 0, "kind": "log", "text": "x", "level": "info"}),
    )
    assert following.feed(*chunk_event) is None  # output not asked for
    assert following.last_event_id == "43"


def output_of(task_id: str, event_id: str, seq: int) -> tuple[str, str, str]:
    return ("task.output", event_id, json.dumps({"id": task_id, "seq": seq, "kind": "output", "text": "x"}))


def test_with_output_the_chunks_before_the_paint_and_a_reset_s_gap_are_found_missing() -> None:
    following = FollowingTasks(None, output=True)
    [listed] = following.paint([Task.from_record(state_of("a", "running", output_chunks=3))], "c")
    assert following.missing(listed, painted=True) == ("a", 0, 3)
    fetched = [OutputChunk("a", seq, "output", "x") for seq in range(3)]
    assert [following.take(c) for c in fetched] == [True, True, True]
    live = following.feed(*output_of("a", "2", 2))  # written before the list counted it
    assert live is not None and following.missing(live) is None and not following.take(live)
    later = following.feed(*output_of("a", "3", 5))  # 3 and 4 not seen: fetch them first
    assert later is not None and following.missing(later) == ("a", 3, 5)
    # A live snapshot's count is not trusted (its chunks may come after it) …
    snapshot_event = event("4", state_of("a", "running", 0.5, output_chunks=9))
    running = following.feed(*snapshot_event)
    assert running is not None and following.missing(running) is None
    # … a resync's is: the output written in the gap is fetched.
    assert following.feed("reset", "", "{}") is None
    resynced = [following.feed(*event("9", state_of(i, "running", 0.5, output_chunks=9))) for i in "ab"]
    assert [following.missing(t) for t in resynced if t is not None] == [("a", 3, 9), ("b", 0, 9)]
    after = following.feed(*event("10", state_of("b", "running", 0.75, output_chunks=12)))
    assert after is not None and following.missing(after) is None  # live again
    # Without output, nothing is ever missing.
    quiet = FollowingTasks(None, output=False)
    assert quiet.missing(listed, painted=True) is None
