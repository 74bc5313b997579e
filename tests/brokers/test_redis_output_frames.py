"""How a process frames the output it reads from Redis (no Redis needed): a writer's
chunk goes out as it was stored, byte for byte the frame of the decoded chunk; anything
else is decoded first, and one that cannot be is refused, never framed as it is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("redis")
from sse_tasks._core import codec
from sse_tasks._core.models import OUTPUT_EVENT, MalformedEvent, OutputChunk, Task, encode_frame
from sse_tasks._core.text import clean_text
from sse_tasks.brokers.redis.outputs import Followed
from sse_tasks.brokers.redis.reader import OutputEvent

EVENT_ID = "e1-1700000000000-3"


def event(raw: bytes, task_id: str = "t1") -> OutputEvent:
    followed = Followed(
        task_id, f"sse_tasks:out:{task_id}".encode(), (0, 0), Task(id=task_id, name="generate")
    )
    return OutputEvent(EVENT_ID, (1700000000000, 3), raw, followed)


def decoded_frame(chunk: OutputChunk) -> bytes:
    return encode_frame(EVENT_ID, OUTPUT_EVENT, chunk.to_dict())


@given(
    text=st.text().map(clean_text),
    seq=st.integers(min_value=0, max_value=10**6),
    kind=st.sampled_from(["output", "log"]),
    level=st.sampled_from([None, "info", "warning", "error"]),
    task_id=st.sampled_from(["t1", "a" * 128, "task-ü.1"]),
)
def test_a_writers_chunk_is_framed_as_stored_exactly_as_decoded(
    text: str, seq: int, kind: str, level: str | None, task_id: str
) -> None:
    chunk = OutputChunk(task_id, seq, kind, text, level if kind == "log" else None)
    raw = codec.dumps(chunk.to_dict())
    assert event(raw, task_id).frame() == decoded_frame(chunk)
    assert event(raw, task_id).frame("/mounted") == decoded_frame(chunk)


def test_a_chunk_with_fields_of_its_own_is_decoded_and_sent_without_them() -> None:
    raw = b'{"id":"t1","seq":2,"kind":"output","text":"x","extra":"<script>"}'
    assert event(raw).frame() == decoded_frame(OutputChunk("t1", 2, "output", "x"))


def test_a_chunk_with_line_breaks_between_its_fields_is_encoded_again() -> None:
    raw = b'{"id":"t1",\n"seq":2,\r\n"kind":"output","text":"x"}'
    assert event(raw).frame() == decoded_frame(OutputChunk("t1", 2, "output", "x"))


def test_a_chunk_whose_id_is_not_text_is_encoded_again() -> None:
    raw = b'{"id":7,"seq":2,"kind":"output","text":"x"}'
    assert event(raw, "7").frame() == encode_frame(
        EVENT_ID, OUTPUT_EVENT, {"id": 7, "seq": 2, "kind": "output", "text": "x"}
    )


def reordered(task_id: str) -> bytes:
    """A chunk another writer could store: a writer's fields in another order."""
    return b'{"seq":0,"kind":"output","text":"x","id":' + codec.dumps(task_id) + b"}"


def test_a_chunk_of_this_stream_s_task_is_sent_as_stored() -> None:
    assert event(reordered("a:t1"), "a:t1").frame().endswith(b"data: " + reordered("a:t1") + b"\n\n")


@pytest.mark.parametrize("other", ["t2", "1", "t1", ":t1", ""])
def test_a_chunk_naming_another_task_is_encoded_again(other: str) -> None:
    assert event(reordered(other), "a:t1").frame() == decoded_frame(OutputChunk(other, 0, "output", "x"))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"t1","seq":1,"kind":"output","text":"a\nevent: task.succeeded\ndata: {}"}',
        b'{"id":"t1","seq":1,"kind":"output","text":"a\rb"}',
        b'{"id":"t1","seq":1,"kind":"output","text":"\\ud800"}',
        b'{"id":"t1","seq":1,"kind":"output","text":"\xff"}',
        b'{"id":"t1","seq":01,"kind":"output","text":"a"}',
        b'{"id":"t1","seq":1,"kind":"output","text":"a"',
        b'{"id":"t1","seq":1,"kind":"output","text":"a\\"}',
        b'{"id":"t1","seq":1,"kind":"output","text":"a\\\\"x"}',
        b"[broken",
    ],
    ids=[
        "line-feed",
        "carriage-return",
        "lone-surrogate",
        "not-utf-8",
        "leading-zero",
        "cut",
        "escaped-end",
        "bare-quote",
        "not-json",
    ],
)
def test_a_chunk_that_is_not_json_is_refused_never_framed(raw: bytes) -> None:
    with pytest.raises(MalformedEvent):
        event(raw).frame()
