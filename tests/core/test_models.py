"""Snapshots, states, events and their encodings: the JSON every client sees, links under the
mount point, SSE frames that payload text cannot forge, and the id limits the API keeps."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from _support import finished

from sse_tasks import NotFound, Task, TaskHub, TaskState
from sse_tasks._core.models import (
    MAX_EVENT_ID_LENGTH,
    MAX_TASK_ID_LENGTH,
    OUTPUT_EVENT,
    OutputChunk,
    TaskEvent,
    encode_frame,
    event_type_for,
    reset_frame,
    task_path,
    utc_time,
    utcnow,
    valid_task_id,
)
from sse_tasks.demo import register_demo_tasks

SNAPSHOT_FIELDS = [
    "id",
    "name",
    "state",
    "progress",
    "message",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "output_chunks",
    "metadata",
    "tags",
    "links",
]


def finished_task() -> Task:
    return Task(
        id="abc",
        name="count",
        state=TaskState.FAILED,
        progress=0.4,
        message="step 4 of 10",
        error={"type": "ValueError", "message": "bad"},
        created_at="2026-11-27T22:00:00.123456Z",
        started_at="2026-11-27T22:00:00.200000Z",
        finished_at="2026-11-27T22:00:01.000000Z",
        event_id="42",
        event_type="task.failed",
        owner="alice",
        output_chunks=3,
    )


# -- states ------------------------------------------------------------------------------


def test_only_succeeded_failed_and_cancelled_are_terminal() -> None:
    assert [s.value for s in TaskState if s.terminal] == ["succeeded", "failed", "cancelled"]
    assert not TaskState.QUEUED.terminal and not TaskState.RUNNING.terminal
    assert str(TaskState.RUNNING) == "running"
    assert [event_type_for(s) for s in TaskState] == [f"task.{s.value}" for s in TaskState]


# -- the snapshot --------------------------------------------------------------------------


def test_a_snapshot_is_the_documented_json_and_nothing_private() -> None:
    data = finished_task().to_dict()
    assert list(data) == SNAPSHOT_FIELDS
    assert data == {
        "id": "abc",
        "name": "count",
        "state": "failed",
        "progress": 0.4,
        "message": "step 4 of 10",
        "result": None,
        "error": {"type": "ValueError", "message": "bad"},
        "created_at": "2026-11-27T22:00:00.123456Z",
        "started_at": "2026-11-27T22:00:00.200000Z",
        "finished_at": "2026-11-27T22:00:01.000000Z",
        "output_chunks": 3,
        "metadata": {},
        "tags": [],
        "links": {"self": "/tasks/abc", "events": "/tasks/abc/events", "output": "/tasks/abc/output"},
    }
    assert json.loads(json.dumps(data)) == data  # plain JSON: the owner and event id stay out


@pytest.mark.parametrize("root", ["/jobs", "/api/v1"])
def test_links_are_under_the_mount_point(root: str) -> None:
    links = finished_task().to_dict(root)["links"]
    assert links == {
        "self": f"{root}/tasks/abc",
        "events": f"{root}/tasks/abc/events",
        "output": f"{root}/tasks/abc/output",
    }
    assert task_path("abc", root) == links["self"]


def test_a_new_task_is_queued_with_a_creation_time_and_nothing_else() -> None:
    task = Task(id="new", name="sleep")
    assert (task.state, task.progress, task.started_at, task.finished_at) == (
        TaskState.QUEUED,
        None,
        None,
        None,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", task.created_at)
    assert not task.terminal


def test_snapshots_are_immutable_and_evolve_into_copies() -> None:
    task = Task(id="a", name="count")
    running = task.evolve(state=TaskState.RUNNING, started_at=utcnow())
    assert task.state is TaskState.QUEUED and running.state is TaskState.RUNNING
    assert running.created_at == task.created_at
    with pytest.raises(AttributeError):
        task.state = TaskState.FAILED  # type: ignore[misc]


def test_a_record_keeps_what_the_json_leaves_out_and_reads_back_equal() -> None:
    task = finished_task()
    record = task.to_record()
    assert "links" not in record
    assert (record["event_id"], record["event_type"], record["owner"]) == ("42", "task.failed", "alice")
    assert Task.from_record(record) == task
    anonymous = Task(id="b", name="sleep")
    assert "owner" not in anonymous.to_record()
    assert Task.from_record(anonymous.to_record()) == anonymous


def test_utcnow_is_iso_8601_utc_with_microseconds_and_moves_forward() -> None:
    first, second = utcnow(), utcnow()
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(pattern, first) and re.fullmatch(pattern, second)
    assert first <= second


# -- output chunks -------------------------------------------------------------------------


def test_an_output_chunk_is_its_documented_data() -> None:
    assert OutputChunk("abc", 0, "output", "hello ").to_dict() == {
        "id": "abc",
        "seq": 0,
        "kind": "output",
        "text": "hello ",
    }
    log = OutputChunk("abc", 1, "log", "10 of 50 words", "info", event_id="7")
    assert log.to_dict() == {"id": "abc", "seq": 1, "kind": "log", "level": "info", "text": "10 of 50 words"}
    assert OutputChunk.from_record(log.to_record()) == log


# -- events and their frames -------------------------------------------------------------


def test_a_frame_is_id_event_and_one_compact_data_line() -> None:
    frame = encode_frame("42", "task.progress", {"progress": 0.5, "message": "half"})
    assert frame == b'id: 42\nevent: task.progress\ndata: {"progress":0.5,"message":"half"}\n\n'
    assert encode_frame(None, "reset", {}) == b"event: reset\ndata: {}\n\n"
    assert reset_frame("history lost") == b'event: reset\ndata: {"reason":"history lost"}\n\n'


@pytest.mark.parametrize(
    "text",
    [
        "line1\nline2",
        "a\r\nevent: task.succeeded\r\ndata: {}\r\n\r\n",
        "\x00nul",
        "id: 99\n\nretry: 1",
        "\u2028",
    ],
)
def test_payload_text_cannot_forge_frame_fields(text: str) -> None:
    frame = encode_frame("1", "task.failed", {"message": text})
    lines = frame.decode().split("\n")
    assert lines[:2] == ["id: 1", "event: task.failed"] and lines[3:] == ["", ""]
    assert lines[2].startswith("data: ") and "\r" not in lines[2] and "\x00" not in lines[2]
    assert json.loads(lines[2][len("data: ") :]) == {"message": text}


def test_an_event_frames_its_snapshot_once_per_mount_point() -> None:
    task = finished_task()
    event = TaskEvent("42", 42, "task.failed", task)
    plain = event.frame()
    assert plain == encode_frame("42", "task.failed", task.to_dict())
    assert event.frame() is plain  # encoded once, shared by every subscriber
    mounted = event.frame("/jobs")
    assert b'"self":"/jobs/tasks/abc"' in mounted and mounted is not plain
    assert event.frame("/jobs") is mounted
    assert event.state_change


def test_an_output_event_carries_its_chunk_not_the_snapshot() -> None:
    chunk = OutputChunk("abc", 2, "output", "word ")
    event = TaskEvent("43", 43, OUTPUT_EVENT, finished_task(), chunk)
    assert event.frame("/jobs") == encode_frame("43", "task.output", chunk.to_dict())
    assert event.state_change  # never coalesced


def test_only_progress_events_may_be_coalesced() -> None:
    task = Task(id="a", name="count", state=TaskState.RUNNING)
    assert not TaskEvent("1", 1, "task.progress", task).state_change
    for state in TaskState:
        assert TaskEvent("1", 1, event_type_for(state), task).state_change


# -- id limits ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_ids_a_hub_makes_are_url_safe_and_within_the_limits() -> None:
    hub = TaskHub("memory://")
    register_demo_tasks(hub)
    async with hub:
        tasks = [await hub.submit("sleep", seconds=0) for _ in range(20)]
        done = [await finished(hub, task.id) for task in tasks]
        with pytest.raises(NotFound):  # longer than any id: never looked up, the same 404
            await hub.get(tasks[0].id.ljust(MAX_TASK_ID_LENGTH + 1, "x"))
    for task in done:
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", task.id)
        assert task.event_id is not None and 0 < len(task.event_id) <= MAX_EVENT_ID_LENGTH
        assert re.fullmatch(r"[A-Za-z0-9_.:-]+", task.event_id)  # an SSE id line needs no escaping


@pytest.mark.parametrize(
    ("task_id", "valid"),
    [
        ("3f9a1c2b7d4e4f0a", True),
        ("report:42.v1", True),
        ("é" * 128, True),
        ("a" * 129, False),
        ("", False),
        (42, False),
        (None, False),
        ("x\n\nevent: datastar-merge-fragments", False),
        ("x\r", False),
        ("x\x00", False),
        ("x\x7f", False),
        ("x\x85", False),  # NEL, a C1 control
        ("x\ud800", False),
        ("x\u2028", True),  # a line separator in Unicode, not in SSE, logs or CSS
    ],
)
def test_valid_task_id(task_id: object, valid: bool) -> None:
    assert valid_task_id(task_id) is valid


ONE_HOUR_EAST = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-12-07T15:44:17.123456Z", "2026-12-07T15:44:17.123456Z"),
        ("2026-12-07T16:44:17+01:00", "2026-12-07T15:44:17.000000Z"),
        ("2026-12-07T15:44:17", "2026-12-07T15:44:17.000000Z"),  # naive: UTC
        (datetime(2026, 12, 7, 15, 44, 17), "2026-12-07T15:44:17.000000Z"),
        (
            datetime(2026, 12, 7, 16, 44, 17, tzinfo=timezone(timedelta(hours=1))),
            "2026-12-07T15:44:17.000000Z",
        ),
        ("0001-01-01T00:00:00+01:00", None),  # before the first year, in UTC
        ("9999-12-31T23:59:59-01:00", None),  # after the last
        ("0999-01-01T00:00:00Z", None),  # a year of three digits: not the snapshot's form
        ("<b>now</b>", None),
        ("", None),
        ("2026-12-07T15:44:17\ud800", None),
        ("2026-12-07T15:44:17.123456Z" + " " * 20, None),
        (1765122257, None),
        (None, None),
        (["2026-12-07"], None),
    ],
)
def test_a_time_from_a_message_is_taken_only_as_a_utc_time(moment: Any, expected: str | None) -> None:
    assert utc_time(moment) == expected
