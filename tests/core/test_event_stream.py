"""The client's bounded reader of an SSE stream: the fields as httpx-sse decodes them,
split anywhere, and no event longer than its bound held."""

from __future__ import annotations

import tracemalloc

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # the reference, in a test only

from sse_tasks._core.event_stream import Event, EventReader, EventTooLarge

STREAM = (
    "retry: 2500\n\n"
    ": heartbeat\n\n"
    'id: 1-0\nevent: task.queued\ndata: {"a": 1}\n\n'
    "id: 2-0\r\nevent: task.output\r\ndata: line one\r\ndata:line two\r\ndata\r\n\r\n"
    "data: no type, the id carries over\r\r"
    "event: reset\nid: bad\0id\ndata: {}\nunknown: field\n:comment\n\n"
    "id: 3-0\nevent: task.succeeded\ndata:  two spaces, one kept\n\n"
    "data: an event the stream ended before its blank line"
)


def reference(text: str) -> list[Event]:
    """What httpx-sse makes of ``text``."""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for line in [*lines.decode(text), *lines.flush()]:
        sse = decoder.decode(line.rstrip("\n"))
        if sse is not None:
            events.append(Event(sse.event, sse.data, sse.id, sse.retry))
    return events


def read(pieces: list[str], max_size: int = 10_000) -> list[Event]:
    reader = EventReader(max_size)
    return [event for piece in pieces for event in reader.feed(piece)]


def test_a_stream_read_whole_gives_the_events_httpx_sse_gives() -> None:
    events = read([STREAM])
    assert events == reference(STREAM)
    assert [e.event for e in events] == [
        "message",
        "task.queued",
        "task.output",
        "message",
        "reset",
        "task.succeeded",
    ]
    assert events[2].data == "line one\nline two\n" and events[3].id == "2-0" and events[4].id == "2-0"


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_the_same_events_however_the_text_is_cut(size: int) -> None:
    """Every cut, a CRLF split between two pieces included, gives the same events."""
    expected = reference(STREAM)
    for offset in range(size):
        pieces = [STREAM[:offset], *(STREAM[i : i + size] for i in range(offset, len(STREAM), size))]
        assert read(pieces) == expected, (size, offset)


def test_a_leading_byte_order_mark_is_skipped_once() -> None:
    assert read(["\ufeffdata: x\n\n"]) == [Event("message", "x", "", None)]
    # Only the first: a second one is the start of a field's name.
    assert read(["\ufeff", "\ufeffdata: x\n\n"]) == []


def test_retry_is_taken_only_as_digits() -> None:
    assert [e.retry for e in read(["retry: 12\n\n", "retry: -1\ndata: a\n\n", "retry: ²\ndata: b\n\n"])] == [
        12,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(["data: " + "x" * 95], id="a line never ended"),
        pytest.param(["data: " + "x" * 10] * 10, id="a line in many pieces"),
        pytest.param(["data: " + "x" * 20 + "\n"] * 5, id="an event of many lines"),
        pytest.param([": " + "c" * 200 + "\n"], id="a comment line"),
    ],
)
def test_an_event_or_line_over_the_bound_raises_before_it_is_held(pieces: list[str]) -> None:
    reader = EventReader(100)
    with pytest.raises(EventTooLarge, match="longer than 100 characters"):
        for piece in pieces:
            list(reader.feed(piece))


def test_the_events_before_a_line_over_the_bound_are_yielded_first() -> None:
    events = EventReader(40).feed("id: 9\nevent: task.succeeded\ndata: {}\n\ndata: " + "x" * 50)
    assert next(events) == Event("task.succeeded", "{}", "9", None)
    with pytest.raises(EventTooLarge):
        next(events)


def test_what_is_held_is_about_the_bound_however_small_the_pieces() -> None:
    """A server sending a character at a time (each a piece of its own, as httpx reads
    chunked answers) makes the reader hold about the characters, not an object each."""
    bound = 50_000
    reader = EventReader(bound)
    list(reader.feed("data: "))
    tracemalloc.start()
    try:
        with pytest.raises(EventTooLarge):
            for i in range(bound + 1):
                list(reader.feed(chr(0x20AC + i % 16)))  # a new one-character str each time
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert held < 4 * bound + (1 << 20), held  # at most 4 bytes a character, plus a little


def test_comments_and_events_under_the_bound_never_add_up() -> None:
    """The bound is per event: heartbeats and many events of 90 characters pass."""
    reader = EventReader(100)
    for _ in range(1000):
        assert list(reader.feed(": " + "h" * 90 + "\n")) == []
        assert list(reader.feed("data: " + "x" * 84 + "\n\n")) == [Event("message", "x" * 84, "", None)]


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventReader(0)
