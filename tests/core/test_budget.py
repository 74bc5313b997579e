"""OutputBudget: a task's output chunks numbered from 0 in order, within a byte and a chunk
bound; the chunk that would go past either becomes one warning, and nothing is kept after."""

from __future__ import annotations

from sse_tasks._core.budget import OutputBudget
from sse_tasks._core.models import OutputChunk

WARNING = "output limit reached (10 chunks or 20 bytes): further output is not kept"


def test_chunks_are_numbered_in_order_logs_and_output_together() -> None:
    budget = OutputBudget("t1", max_bytes=1 << 20, max_chunks=100)
    taken = [
        budget.take("output", "a", None),
        budget.take("log", "started", "info"),
        budget.take("output", "b", None),
    ]
    assert taken == [
        OutputChunk("t1", 0, "output", "a", None),
        OutputChunk("t1", 1, "log", "started", "info"),
        OutputChunk("t1", 2, "output", "b", None),
    ]
    assert budget.chunks == 3 and not budget.full


def test_the_byte_bound_warns_once_then_keeps_nothing() -> None:
    budget = OutputBudget("t1", max_bytes=20, max_chunks=10)
    kept = [budget.take("output", "0123456789", None), budget.take("output", "é" * 5, None)]
    assert [c.seq for c in kept if c] == [0, 1]  # 10 bytes + 10 bytes: exactly at the bound
    warning = budget.take("output", "x", None)  # one byte more than the bound
    assert warning == OutputChunk("t1", 2, "log", WARNING, "warning")
    assert budget.full and budget.chunks == 3
    assert budget.take("output", "y", None) is None
    assert budget.take("log", "even a log line", "error") is None
    assert budget.chunks == 3


def test_bytes_are_counted_as_utf8() -> None:
    budget = OutputBudget("t1", max_bytes=3, max_chunks=10)
    assert budget.take("output", "€", None) is not None  # one character, three bytes
    chunk = budget.take("output", "a", None)
    assert chunk is not None and chunk.kind == "log" and chunk.level == "warning"


def test_one_chunk_larger_than_the_whole_bound_becomes_the_warning() -> None:
    budget = OutputBudget("t1", max_bytes=20, max_chunks=10)
    chunk = budget.take("output", "x" * 21, None)
    assert chunk == OutputChunk("t1", 0, "log", WARNING, "warning")
    assert budget.take("output", "small", None) is None


def test_the_chunk_bound_keeps_that_many_then_the_warning() -> None:
    budget = OutputBudget("t1", max_bytes=1 << 20, max_chunks=3)
    kept = [budget.take("output", str(i), None) for i in range(3)]
    assert [c.seq for c in kept if c] == [0, 1, 2]
    warning = budget.take("log", "a fourth", "info")
    assert warning is not None and (warning.seq, warning.kind, warning.level) == (3, "log", "warning")
    assert warning.text == "output limit reached (3 chunks or 1048576 bytes): further output is not kept"
    assert budget.take("output", "more", None) is None
    assert budget.chunks == 4  # the three kept and the warning


def test_a_zero_budget_keeps_only_the_warning() -> None:
    budget = OutputBudget("t1", max_bytes=0, max_chunks=0)
    chunk = budget.take("output", "", None)
    assert chunk is not None and chunk.seq == 0 and chunk.level == "warning"
    assert budget.take("output", "", None) is None
