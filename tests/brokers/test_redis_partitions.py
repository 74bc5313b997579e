"""Partitions without Redis: which partition a task is in, each partition's key prefix,
and the ids of positions, parsed from anything a client sends."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("redis")

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from sse_tasks._core.log import PartKey, Vector
from sse_tasks.brokers.redis.partitioned import Partitions, partition_of, partition_prefixes


def partitions(epochs: list[str]) -> Partitions[Any]:
    return Partitions([SimpleNamespace(history_epoch=epoch) for epoch in epochs], 100)


def test_each_partitions_tag_sits_in_its_own_range_of_slots() -> None:
    for count in (2, 3, 6, 12):
        prefixes = partition_prefixes("sse_tasks", count, cluster=True)
        for index, prefix in enumerate(prefixes):
            assert prefix.startswith(f"sse_tasks.{count}.{index}.")
            slot = key_slot(prefix.encode())
            assert (
                index * REDIS_CLUSTER_HASH_SLOTS // count
                <= slot
                < (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
            )
    assert partition_prefixes("sse_tasks", 1, cluster=True) == ["sse_tasks"]  # the layout of one
    assert partition_prefixes("{app}", 2, cluster=True) == ["{app}.2.0", "{app}.2.1"]  # its own tag kept
    assert [partition_of(f"t{n}", 3) for n in range(6)] == [partition_of(f"t{n}", 3) for n in range(6)]


def test_positions_name_and_parse_back() -> None:
    parts = partitions(["aa", "bb", "cc"])
    vector = Vector([(1, 2), None, (30, 0)])
    assert parts.parse(parts.name(vector)) == vector
    assert parts.parse("bb-5-1") == PartKey(1, (5, 1))  # a task's own id, in its partition
    assert parts.parse(partitions(["aa", "bb", "dd"]).name(vector)) is None  # another history
    assert parts.parse(partitions(["aa", "bb"]).name(Vector([(1, 2), None]))) is None  # another count


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=300))
def test_any_text_parses_as_an_id_or_as_nothing(text: str) -> None:
    """Lone surrogates, huge numbers, many underscores: an id of this log, or None; never raises."""
    parts = partitions(["aa", "bb", "cc"])
    for candidate in (
        text,
        "_".join([parts.name(Vector([None] * 3)).split("_")[0], text, text, text]),
        f"bb-{text}",
    ):
        found = parts.parse(candidate)
        assert found is None or isinstance(found, (Vector, PartKey))
