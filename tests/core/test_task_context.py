"""TaskContext over a sink: progress checked and cleaned, output and log lines in order,
cancellation raised where the task calls in. The sink here records what a run would get.

(A context handed to task functions by the runner, and ``current_task()``:
tests/runner/test_context.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from sse_tasks import TaskCancelled, TaskContext
from sse_tasks._core.text import MAX_MESSAGE_LENGTH
from sse_tasks._runner.job import error_of


class RecordingSink:
    """A :class:`TaskSink` that keeps what it is given, cancellable by the test."""

    def __init__(self) -> None:
        self.cancelled = False
        self.reports: list[tuple[float | None, str | None]] = []
        self.chunks: list[tuple[str, str, str | None]] = []

    def report(self, progress: float | None, message: str | None) -> None:
        self.reports.append((progress, message))

    def output(self, kind: str, text: str, level: str | None) -> None:
        self.chunks.append((kind, text, level))


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def ctx(sink: RecordingSink) -> TaskContext:
    return TaskContext("t1", "count", {"n": 3}, sink)


def test_a_context_names_its_task_and_params(ctx: TaskContext) -> None:
    assert (ctx.task_id, ctx.name, ctx.params) == ("t1", "count", {"n": 3})


def test_progress_takes_a_fraction_in_0_1_or_none_and_a_message(
    ctx: TaskContext, sink: RecordingSink
) -> None:
    ctx.progress(0.25, "a quarter")
    ctx.progress(1)
    ctx.progress(0)
    ctx.progress(None, "no fraction")
    ctx.progress()
    assert sink.reports == [
        (0.25, "a quarter"),
        (1.0, None),
        (0.0, None),
        (None, "no fraction"),
        (None, None),
    ]
    assert all(type(p) is float for p, _ in sink.reports if p is not None)


@pytest.mark.parametrize(
    "fraction", [1.5, -0.1, float("nan"), float("inf"), True, "0.5", [0.5], 10**400, -(10**4000)]
)
def test_progress_refuses_anything_but_a_fraction_in_0_1(
    ctx: TaskContext, sink: RecordingSink, fraction: Any
) -> None:
    with pytest.raises(ValueError, match="progress fraction must be"):
        ctx.progress(fraction)
    assert sink.reports == []


def test_text_is_made_encodable_and_messages_become_text(ctx: TaskContext, sink: RecordingSink) -> None:
    ctx.progress(0.5, "half \ud800 way")
    ctx.progress(0.6, 42)  # type: ignore[arg-type]
    ctx.output("out \udfff")
    ctx.log("log \ud800", level="error")
    assert sink.reports == [(0.5, "half \ufffd way"), (0.6, "42")]
    assert sink.chunks == [("output", "out \ufffd", None), ("log", "log \ufffd", "error")]


def test_a_long_message_is_cut_to_its_bound(ctx: TaskContext, sink: RecordingSink) -> None:
    ctx.progress(0.1, "x" * MAX_MESSAGE_LENGTH)
    ctx.progress(0.2, "y" * (10 * MAX_MESSAGE_LENGTH))
    kept, cut = (message for _, message in sink.reports)
    assert kept == "x" * MAX_MESSAGE_LENGTH
    assert len(cut) == MAX_MESSAGE_LENGTH and cut.endswith("y…")


def test_an_exception_message_is_read_whatever_its_str_does() -> None:
    class Exits(Exception):
        def __str__(self) -> str:
            raise SystemExit("from __str__")

    assert error_of(Exits()) == {"type": "Exits", "message": "(the exception's message could not be read)"}
    long = error_of(RuntimeError("z" * 100_000))
    assert len(long["message"]) == MAX_MESSAGE_LENGTH and long["message"].endswith("z…")


def test_output_and_log_lines_reach_the_sink_in_order(ctx: TaskContext, sink: RecordingSink) -> None:
    ctx.output("a")
    ctx.log("started")
    for level in ("debug", "info", "warning", "error"):
        ctx.log(level, level=level)
    ctx.output("b")
    assert sink.chunks == [
        ("output", "a", None),
        ("log", "started", "info"),
        ("log", "debug", "debug"),
        ("log", "info", "info"),
        ("log", "warning", "warning"),
        ("log", "error", "error"),
        ("output", "b", None),
    ]


@pytest.mark.parametrize("level", ["loud", "INFO", "", "warn"])
def test_a_log_level_must_be_known(ctx: TaskContext, sink: RecordingSink, level: str) -> None:
    with pytest.raises(ValueError, match="level must be one of debug, info, warning, error"):
        ctx.log("x", level=level)
    assert sink.chunks == []


def test_once_cancelled_every_call_raises_task_cancelled(ctx: TaskContext, sink: RecordingSink) -> None:
    ctx.check()
    assert not ctx.cancelled
    sink.cancelled = True
    assert ctx.cancelled
    for call in (ctx.check, lambda: ctx.progress(0.5), lambda: ctx.output("x"), lambda: ctx.log("x")):
        with pytest.raises(TaskCancelled, match="task t1 was cancelled"):
            call()
    assert sink.reports == [] and sink.chunks == []
