"""What ``sse-tasks watch`` and ``submit`` print: a live bar on a terminal, lines in a pipe.

Both show the task's output and log lines as they come: on a terminal above the bar,
in a pipe as they are (output text unchanged, each log line prefixed with its level).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import IO, Any, Protocol

from .._core import codec
from .._core.errors import SSETasksError
from .._core.models import OutputChunk, Task, TaskState
from .._core.text import escape_controls, has_lone_surrogate
from ..client import Client

#: Exit codes of ``sse-tasks watch``: the task's outcome, usable in scripts.
EXIT_CODES = {TaskState.SUCCEEDED: 0, TaskState.FAILED: 1, TaskState.CANCELLED: 2}
EXIT_UNREACHABLE = 2


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; a value is JSON when it parses as JSON, else a string.

    Strict JSON: ``NaN`` and ``1e400`` are strings. Raises ``ValueError`` for a pair
    without ``=`` and for one that is not text (bytes the terminal's encoding could not
    decode).
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        if has_lone_surrogate(pair):
            raise ValueError(f"{key!r}: its value is not valid text in this terminal's encoding")
        try:
            params[key] = codec.loads(raw)
        except (ValueError, RecursionError):
            params[key] = raw
    return params


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None or not end:
        return None
    return (_utc(end) - _utc(start)).total_seconds()


def _utc(moment: str) -> datetime:
    """A snapshot's time; one without its offset (not the server's) is taken as UTC."""
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def outcome(task: Task) -> str:
    """One line saying how a finished task ended (a server's text shown, never obeyed)."""
    took = _seconds(task.started_at or task.created_at, task.finished_at)
    timing = f" in {took:.1f}s" if took is not None else ""
    who = escape_controls(f"{task.name} {task.id}")
    if task.state is TaskState.SUCCEEDED:
        return f"{who} succeeded{timing}: {json.dumps(task.result)}"  # JSON escapes them itself
    if task.state is TaskState.FAILED:
        error = task.error or {}
        kind, message = str(error.get("type", "Error")), str(error.get("message", ""))
        return f"{who} failed{timing}: {escape_controls(kind)}: {escape_controls(message)}"
    said = f": {escape_controls(task.message)}" if task.message else ""
    return f"{who} {task.state}{timing}{said}"


def note(message: str) -> None:
    """A line on stderr about the connection (never stdout: that is the task's output)."""
    print(f"sse-tasks: {message}", file=sys.stderr, flush=True)


class WatchClient(Client):
    """A :class:`Client` whose ``follow`` says why it waits before each reconnection.

    Without this, an unreachable server means seconds of silence (the backoff) before
    the final error. ``on_retry`` gets one line per retry; by default it goes to stderr.
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.on_retry: Callable[[str], None] = note
        self._failure = ""

    def _give_up_after(self, failures: int, task_id: str, error_text: str) -> None:
        super()._give_up_after(failures, task_id, error_text)  # raises when out of retries
        self._failure = error_text

    def _delay(self, failures: int, retry_after: float = 0.0) -> float:
        delay = super()._delay(failures, retry_after)
        retry = f"retry {failures} of {self.retries}"
        self.on_retry(f"{self.shown_url}: {self._failure}; retrying in {delay:.1f} s ({retry})")
        return delay


class View(Protocol):
    def connecting(self, url: str) -> None: ...

    def update(self, task: Task) -> None: ...

    def output(self, chunk: OutputChunk) -> None: ...

    def close(self) -> None: ...


def log_line(chunk: OutputChunk) -> str:
    """How a log chunk is shown: ``info: 10 of 50 words``."""
    return escape_controls(f"{chunk.level or 'info'}: {chunk.text}")


class LineView:
    """One line per change and per log line, the output text as it is, for pipes and logs.

    A line (a change, a log line) that comes after output text not ending in a newline
    starts on a line of its own.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last: tuple[Any, ...] | None = None
        self.mid_line = False  # the output written so far does not end with a newline

    def _line(self, line: str) -> None:
        if self.mid_line:
            self.out.write("\n")
            self.mid_line = False
        print(line, file=self.out, flush=True)

    def output(self, chunk: OutputChunk) -> None:
        if chunk.kind != "output":
            self._line(log_line(chunk))
        elif chunk.text:
            self.out.write(chunk.text)
            self.out.flush()
            self.mid_line = not chunk.text.endswith("\n")

    def connecting(self, url: str) -> None:
        pass  # quiet in scripts: only trouble (a retry, the final error) goes to stderr

    def update(self, task: Task) -> None:
        if task.terminal:
            line = outcome(task)
        else:
            percent = f" {task.progress * 100:.0f}%" if task.progress is not None else ""
            line = f"{escape_controls(f'{task.name} {task.id}')} {task.state}{percent}"
            if task.message:
                line += f" {escape_controls(task.message)}"
        key = (task.state, task.progress, task.message)
        if key != self.last:
            self.last = key
            self._line(line)

    def close(self) -> None:
        pass


class BarView:
    """A live ``rich`` progress bar with the task's state and message."""

    def __init__(self) -> None:
        from rich.console import Console, RenderableType
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        self.text = Text
        view = self

        class OutputProgress(Progress):
            """The bar, below the line of output being written (finished lines go above)."""

            def get_renderables(self) -> Iterable[RenderableType]:
                if view.pending:
                    yield Text(view.pending, overflow="ellipsis", no_wrap=True)
                yield self.make_tasks_table(self.tasks)

        self.pending = ""  # output text after its last complete line
        self.console = Console()
        self.progress = OutputProgress(
            SpinnerColumn(),
            # A server's name and message are text, not rich markup ("[/var/data]").
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[state]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}", markup=False),
            console=self.console,
        )
        self.bar: Any = None
        self.seen = False  # a snapshot arrived: the bar is the task's, not "connecting"

    def connecting(self, url: str) -> None:
        """Say what it is doing until the first snapshot (retries print above the bar)."""
        self.progress.start()
        self.bar = self.progress.add_task(f"connecting to {url}", total=None, state="", message="")

    def update(self, task: Task) -> None:
        total = None if task.progress is None and task.state is TaskState.RUNNING else 100.0
        completed = (task.progress or 0.0) * 100
        if task.state is TaskState.SUCCEEDED:
            completed = 100.0
        if self.bar is None:
            self.progress.start()
            self.bar = self.progress.add_task(escape_controls(task.name), total=total, state="", message="")
        self.seen = True
        self.progress.update(
            self.bar,
            description=escape_controls(task.name),
            total=total,
            completed=completed,
            state=str(task.state),
            message=escape_controls(task.message or ""),
        )
        if task.terminal:
            self.close()
            style = {TaskState.SUCCEEDED: "green", TaskState.FAILED: "red"}.get(task.state, "yellow")
            self.console.print(outcome(task), style=style, markup=False, highlight=False)

    def output(self, chunk: OutputChunk) -> None:
        """Output and log lines above the bar, as they come; the line being written, just above."""
        print_plain = functools.partial(self.console.print, markup=False, highlight=False, soft_wrap=True)
        if chunk.kind != "output":
            self._flush()
            print_plain(self.text(log_line(chunk), style="dim"))  # (a style= would dim the bar too)
            return
        *lines, self.pending = (self.pending + chunk.text).split("\n")
        for line in lines:
            print_plain(line)
        width = max(self.console.width, 20)
        while len(self.pending) > width:  # a long line: wrapped at a space, as it is written
            cut = self.pending.rfind(" ", 0, width) + 1 or width
            line, self.pending = self.pending[:cut], self.pending[cut:]
            print_plain(line)

    def _flush(self) -> None:
        line, self.pending = self.pending, ""
        if line:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._flush()
        if self.bar is not None and not self.seen:  # never connected: no empty bar left behind
            self.progress.remove_task(self.bar)
            self.bar = None
        self.progress.stop()


def make_view(out: IO[str]) -> View:
    """A progress bar when ``out`` is a terminal and ``rich`` is installed, else lines."""
    if not out.isatty():
        return LineView(out)
    try:
        return BarView()
    except ImportError:
        print(
            "sse-tasks: install the 'cli' extra (pip install 'sse-tasks[cli]') for a progress bar",
            file=sys.stderr,
        )
        return LineView(out)


def watch_task(client: Client, task_id: str, out: IO[str]) -> int:
    """Follow ``task_id`` to its end, showing each change; the exit code of its outcome.

    With a :class:`WatchClient`, each reconnection is announced on stderr as it waits.
    """
    view = make_view(out)
    view.connecting(client.shown_url)
    last: Task | None = None
    try:
        for item in client.follow(task_id, output=True):
            if isinstance(item, OutputChunk):
                view.output(item)
            else:
                last = item
                view.update(item)
    except SSETasksError as exc:
        view.close()
        print(f"sse-tasks: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        view.close()
        return 130
    if last is None:  # pragma: no cover - follow always yields a terminal snapshot
        return EXIT_UNREACHABLE
    return EXIT_CODES.get(last.state, EXIT_UNREACHABLE)
