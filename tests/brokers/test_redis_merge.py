"""How the Redis reader merges one read over several streams (no Redis needed)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("redis")
from sse_tasks.brokers.redis.reader import Merge

LOG, OUT = b"P:log", b"P:out:t"


def entries(*ids: str) -> list[Any]:
    return [(i.encode(), [b"f", b"v"]) for i in ids]


def taken(found: list[Any]) -> list[tuple[str, str | None]]:
    return [(entry[0].decode(), owner) for _, entry, owner in found]


def test_streams_answered_whole_are_taken_whole_in_id_order() -> None:
    merge = Merge(count=3)
    replies = [(LOG, entries("1-0", "5-0")), (OUT, entries("2-0", "3-0"))]
    assert taken(merge.take(replies, LOG, {OUT: "t"})) == [
        ("1-0", None),
        ("2-0", "t"),
        ("3-0", "t"),
        ("5-0", None),
    ]
    assert not merge.buffered


def test_what_a_full_stream_may_still_precede_waits_for_the_next_read() -> None:
    """The output stream filled COUNT at 4-0: the log's 5-0 and 9-0 wait (the output
    stream may hold 4-1…), each stream reads on from where it was answered."""
    merge = Merge(count=3)
    replies = [(LOG, entries("1-0", "5-0", "9-0")[:2]), (OUT, entries("2-0", "3-0", "4-0"))]
    first = merge.take(replies, LOG, {OUT: "t"})
    assert taken(first) == [("1-0", None), ("2-0", "t"), ("3-0", "t"), ("4-0", "t")]
    assert merge.positions == {LOG: "5-0", OUT: "4-0"}
    # The next read: the output stream had 6-0 more; the log's 5-0 comes before it.
    second = merge.take([(OUT, entries("6-0"))], LOG, {OUT: "t"})
    assert taken(second) == [("5-0", None), ("6-0", "t")]
    assert not merge.buffered


def test_two_full_streams_are_taken_up_to_the_lower_of_their_ends() -> None:
    merge = Merge(count=2)
    replies = [(LOG, entries("1-0", "7-0")), (OUT, entries("2-0", "3-0"))]
    assert taken(merge.take(replies, LOG, {OUT: "t"})) == [("1-0", None), ("2-0", "t"), ("3-0", "t")]
    assert [entry[0] for _, entry, _ in merge.buffered[LOG]] == [b"7-0"]
    merge.keep([LOG])  # the task is no longer followed: its stream is forgotten
    assert OUT not in merge.positions
