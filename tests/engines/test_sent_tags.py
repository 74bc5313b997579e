"""The rule for the tags a sender attaches to an engine's message (``sse_tasks_tags``)."""

from __future__ import annotations

import logging

import pytest

from sse_tasks.engines import TAGS_KEY, sent_tags
from sse_tasks.engines.tags import tags_value


def test_a_list_a_tuple_or_a_comma_separated_string() -> None:
    assert TAGS_KEY == "sse_tasks_tags"
    assert sent_tags(["user:42", "batch/7", "user:42"]) == ("user:42", "batch/7")
    assert sent_tags(("a",)) == ("a",)
    assert sent_tags("user:42, batch/7") == ("user:42", "batch/7")
    assert sent_tags(tags_value(("a", "b"))) == ("a", "b")
    assert sent_tags(None) == sent_tags([]) == sent_tags("") == ()


@pytest.mark.parametrize(
    "value",
    [
        ["not a tag"],
        ["ok", "<script>"],
        [f"t{i}" for i in range(17)],
        ["x" * 65],
        {"a": 1},
        42,
        [None],
        "['a', 'b']",
    ],
)
def test_invalid_tags_are_dropped_with_one_warning(value: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sse_tasks.worker"):
        assert sent_tags(value, "t-1") == ()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["task t-1"]
    assert "dropped" in caplog.records[0].getMessage()
