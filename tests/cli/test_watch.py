"""``sse-tasks watch`` and ``submit`` as a shell user runs them: in a terminal and in a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _support import LiveServer, free_port, submit_sync

from sse_tasks import OutputChunk, Task, TaskContext, TaskHub, TaskState
from sse_tasks.cli.watch import LineView, make_view, parse_params
from sse_tasks.demo import generated_text, register_demo_tasks, word

CLI = [sys.executable, "-m", "sse_tasks"]


@pytest.fixture
def gate() -> threading.Event:
    """Holds the ``stepped`` task at its start until the test has seen ``watch`` attach."""
    return threading.Event()


@pytest.fixture
def server(live_server: Callable[..., LiveServer], gate: threading.Event) -> LiveServer:
    """The demo tasks on a memory hub: these tests are about the command, not the broker."""
    hub = TaskHub("memory://", shutdown_grace=0.5)
    register_demo_tasks(hub)

    @hub.task
    def stepped(ctx: TaskContext, n: int = 10) -> dict[str, int]:
        if not gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        for i in range(1, n + 1):
            ctx.progress(i / n, f"step {i} of {n}")
        return {"count": n}

    return live_server(hub)


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def submit(server: LiveServer, name: str, **params: Any) -> str:
    return f"{server.url}/tasks/{submit_sync(server.url, name, **params)['id']}"


def test_watch_in_a_pipe_prints_one_line_per_change_and_exits_0(
    server: LiveServer, gate: threading.Event
) -> None:
    url = submit(server, "stepped", n=10)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen([*CLI, "watch", url], **pipes) as proc:  # type: ignore[call-overload]
        assert proc.stdout is not None
        first = proc.stdout.readline()  # watch is attached: now let the task make progress
        gate.set()
        rest, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0, errors
    lines = [first.rstrip("\n"), *rest.splitlines()]
    task_id = url.rsplit("/", 1)[1]
    assert all(task_id in line for line in lines)
    assert any(" running " in line and "% step " in line for line in lines), lines
    assert lines[-1].startswith(f"stepped {task_id} succeeded in ")
    assert lines[-1].endswith(': {"count": 10}')
    assert "\x1b[" not in first + rest  # no terminal codes in a pipe


def words(start: int, stop: int) -> str:
    return "".join(f"{word(i)} " for i in range(start, stop))


def test_watch_in_a_pipe_prints_the_output_and_the_log_lines_as_they_come(server: LiveServer) -> None:
    url = submit(server, "generate", words=25, delay=0.01)
    task_id = url.rsplit("/", 1)[1]
    done = run("watch", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines(keepends=True)
    assert lines[-1].startswith(f"generate {task_id} succeeded in ")
    assert lines[-1].endswith(': {"words": 25}\n')
    status = [line for line in lines if line.startswith(f"generate {task_id} ")]
    assert status[0].startswith(f"generate {task_id} ") and len(status) <= 4, status
    # The text as it was written, each log line (with its level) on its own line where it came.
    printed = "".join(line for line in lines if line not in status)
    expected = (
        f"{words(0, 10)}\ninfo: 10 of 25 words\n{words(10, 20)}\ninfo: 20 of 25 words\n{words(20, 25)}\n"
    )
    assert printed == expected
    assert expected.replace("\n", "").replace("info: 10 of 25 words", "").replace(
        "info: 20 of 25 words", ""
    ) == generated_text(25)


def test_watch_of_a_finished_task_prints_its_whole_output_then_how_it_ended(server: LiveServer) -> None:
    url = submit(server, "generate", words=12, delay=0)
    assert run("watch", url).returncode == 0  # now it has finished
    again = run("watch", url)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[:-1] == [words(0, 10).rstrip("\n"), "info: 10 of 12 words", words(10, 12)]
    assert " succeeded in " in lines[-1]


def test_watch_accepts_the_events_url_and_exits_1_on_failure(server: LiveServer) -> None:
    url = submit(server, "fail", message="no paper")
    done = run("watch", url + "/events")
    assert done.returncode == 1
    assert "failed" in done.stdout
    assert "RuntimeError: no paper" in done.stdout


def test_watch_exits_2_when_the_task_is_cancelled(server: LiveServer) -> None:
    url = submit(server, "sleep", seconds=60)
    with subprocess.Popen([*CLI, "watch", url], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # watching now
        assert "sleep" in first
        assert httpx.delete(url).status_code == 202
        rest = proc.stdout.read()
        assert proc.wait(30) == 2
    assert "cancelled" in rest


def test_watch_exits_2_when_unreachable_or_unknown(server: LiveServer) -> None:
    nobody = run("watch", f"http://127.0.0.1:{free_port()}/tasks/abc", "--retries", "1")
    assert nobody.returncode == 2
    assert "lost task 'abc'" in nobody.stderr
    unknown = run("watch", f"{server.url}/tasks/nope")
    assert unknown.returncode == 2
    assert "no task with id 'nope'" in unknown.stderr
    not_a_task = run("watch", f"{server.url}/somewhere")
    assert not_a_task.returncode == 2
    assert "not a task URL" in not_a_task.stderr


def test_watch_says_it_is_retrying_before_it_gives_up() -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    with subprocess.Popen(
        [*CLI, "watch", base + "/tasks/abc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        try:
            first = proc.stderr.readline()
            # Said after the first refusal, with 5 retries (at least 7.75 s of backoff) to go.
            assert proc.poll() is None, proc.stderr.read()
            assert first.startswith(f"sse-tasks: {base}: "), first
            assert "retrying in " in first and "(retry 1 of 5)" in first, first
        finally:
            proc.kill()
            proc.wait(10)


def test_watch_in_a_pipe_keeps_connection_notes_off_stdout() -> None:
    nobody = run("watch", f"http://127.0.0.1:{free_port()}/tasks/abc", "--retries", "2")
    assert nobody.returncode == 2
    assert nobody.stdout == ""
    notes = nobody.stderr.splitlines()
    assert len(notes) == 3, nobody.stderr
    assert "(retry 1 of 2)" in notes[0] and "(retry 2 of 2)" in notes[1]
    assert "lost task 'abc'" in notes[2] and "after 2 retries" in notes[2]


def test_watch_without_retries_says_only_the_error() -> None:
    nobody = run("watch", f"http://127.0.0.1:{free_port()}/tasks/abc", "--retries", "0")
    assert nobody.returncode == 2
    assert nobody.stdout == ""
    assert len(nobody.stderr.splitlines()) == 1 and "lost task 'abc'" in nobody.stderr


def open_terminal() -> tuple[int, int, dict[str, str]]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    return master, slave, env


def test_watch_on_a_terminal_says_where_it_connects_and_retries() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    master, slave, env = open_terminal()
    with subprocess.Popen(
        [*CLI, "watch", base + "/tasks/abc", "--retries", "1"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    ) as proc:
        os.close(slave)
        try:
            output = read_terminal(master, proc)
        finally:
            os.close(master)
        assert proc.wait(30) == 2
    text = output.decode("utf-8", "replace")
    assert f"connecting to {base}" in text
    assert "retrying in " in text and "(retry 1 of 1)" in text
    assert "lost task 'abc'" in text


def read_terminal(master: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    return output


def test_watch_on_a_terminal_shows_a_progress_bar(server: LiveServer) -> None:
    url = submit(server, "count", n=10, interval=0.1)
    master, slave, env = open_terminal()
    with subprocess.Popen(
        [*CLI, "watch", url], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    ) as proc:
        os.close(slave)
        try:
            output = read_terminal(master, proc)
        finally:
            os.close(master)
        assert proc.wait(30) == 0
    text = output.decode("utf-8", "replace")
    assert "━" in text  # rich's bar
    assert "\x1b[" in text  # drawn in place with terminal codes
    assert "step 10 of 10" in text
    assert "100%" in text
    assert "succeeded" in text


def test_watch_on_a_terminal_prints_the_output_above_the_bar(server: LiveServer) -> None:
    url = submit(server, "generate", words=30, delay=0.02)
    master, slave, env = open_terminal()
    with subprocess.Popen(
        [*CLI, "watch", url], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    ) as proc:
        os.close(slave)
        try:
            output = read_terminal(master, proc)
        finally:
            os.close(master)
        assert proc.wait(30) == 0
    text = output.decode("utf-8", "replace")
    assert "━" in text and "succeeded" in text
    for start in (0, 10, 20):  # each run of words between two log lines, on a line of its own
        assert words(start, start + 10).rstrip() in text
        assert f"info: {start + 10} of 30 words" in text
    assert text.rindex("info: 30 of 30 words") < text.rindex("succeeded")


def test_without_rich_a_terminal_gets_lines_and_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich.console", None)
    view = make_view(Terminal())
    assert isinstance(view, LineView)
    assert "pip install 'sse-tasks[cli]'" in capsys.readouterr().err


def test_submit_prints_the_task_url(server: LiveServer) -> None:
    done = run("submit", server.url, "sleep", "seconds=0")
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith(f"{server.url}/tasks/")
    assert httpx.get(url).json()["name"] == "sleep"
    as_json = run("submit", server.url, "fail", "message=hello world", "--json")
    assert as_json.returncode == 0
    assert '"name":"fail"' in as_json.stdout


def test_submit_and_watch(server: LiveServer) -> None:
    ok = run("submit", server.url, "count", "n=2", "interval=0.01", "--watch")
    assert ok.returncode == 0, ok.stderr
    assert "succeeded in" in ok.stdout
    assert ok.stdout.rstrip().endswith('{"count": 2}')
    failed = run("submit", server.url, "fail", "message=out of ink", "--watch")
    assert failed.returncode == 1
    assert "RuntimeError: out of ink" in failed.stdout


def test_submit_errors(server: LiveServer) -> None:
    unknown = run("submit", server.url, "nope")
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr
    invalid = run("submit", server.url, "count", "n=lots")
    assert invalid.returncode == 2
    assert "422" in invalid.stderr
    malformed = run("submit", server.url, "count", "n")
    assert malformed.returncode == 2
    assert "expected key=value" in malformed.stderr


def test_parse_params() -> None:
    assert parse_params(("n=5", "interval=0.5", "flag=true", "message=hi there", "empty=", "items=[1]")) == {
        "n": 5,
        "interval": 0.5,
        "flag": True,
        "message": "hi there",
        "empty": "",
        "items": [1],
    }
    with pytest.raises(ValueError, match="expected key=value"):
        parse_params(("=5",))


def test_watch_keeps_the_url_query_for_every_request(live_server: Callable[..., LiveServer]) -> None:
    """A task URL carrying an access token (``?token=…``) works for the whole follow."""
    from starlette.responses import JSONResponse

    hub = TaskHub("memory://", shutdown_grace=0.5)
    register_demo_tasks(hub)
    inner = hub.app

    async def needs_token(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and b"token=s3cret" not in scope["query_string"]:
            forbidden = {"error": {"code": "forbidden", "message": "token required"}}
            await JSONResponse(forbidden, status_code=403)(scope, receive, send)
            return
        await inner(scope, receive, send)

    server = live_server(hub, needs_token)
    response = httpx.post(f"{server.url}/tasks?token=s3cret", json={"name": "fail", "params": {}})
    url = f"{server.url}/tasks/{response.json()['id']}"
    assert run("watch", url + "?token=s3cret").returncode == 1
    refused = run("watch", url)
    assert refused.returncode == 2
    assert "token required" in refused.stderr


@pytest.mark.parametrize("header", ["X: é", "É: v", "X: a\tb\x1b[2J"])
def test_a_header_that_is_not_printable_ascii_is_refused_in_one_line(header: str) -> None:
    for command in (("watch", "http://127.0.0.1:1/tasks/abc"), ("submit", "http://127.0.0.1:1", "sleep")):
        refused = run(*command, "-H", header, "--retries", "0")
        assert refused.returncode == 2, refused.stderr
        assert "printable ASCII" in refused.stderr and "Traceback" not in refused.stderr


def test_values_are_strict_json_or_text() -> None:
    assert parse_params(("a=NaN", "b=1e400", "c=[1, 2]", "d=" + "[" * 100_000)) == {
        "a": "NaN",
        "b": "1e400",
        "c": [1, 2],
        "d": "[" * 100_000,
    }
    with pytest.raises(ValueError, match="not valid text"):
        parse_params(("x=\udcff",))  # a byte the terminal's encoding could not decode


ESCAPES = "\x1b]0;pwned\x07\x1b[2J"


def _hostile(state: TaskState, **fields: Any) -> Task:
    """A snapshot whose server put terminal escapes in every text it shows."""
    return Task(
        id="T1",
        name=f"job{ESCAPES}",
        state=state,
        message=f"copying [/var/data] [bold red]{ESCAPES}",
        started_at="2026-01-01T00:00:00Z",
        **fields,
    )


def test_a_servers_text_is_shown_never_obeyed_in_lines() -> None:
    """Names, messages, errors and log lines come out with their control characters
    written as ``\\xNN``; a time without its offset is taken as UTC, not a crash."""
    out = io.StringIO()
    view = LineView(out)
    view.update(_hostile(TaskState.RUNNING, progress=0.5))
    view.output(OutputChunk(task_id="T1", seq=0, kind="log", text=f"step{ESCAPES}", level=f"info{ESCAPES}"))
    error = {"type": f"Err{ESCAPES}", "message": f"boom{ESCAPES}"}
    view.update(_hostile(TaskState.FAILED, error=error, finished_at="2026-01-01T00:00:01"))
    shown = out.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown, shown
    assert shown.count("\\x1b]0;pwned\\x07\\x1b[2J") == 7, shown  # 2 names, message, log (2), error (2)
    assert "failed in 1.0s: Err\\x1b" in shown


def test_a_servers_text_is_not_markup_on_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[/var/data]`` in a message is text: rich read it as a closing tag and its refresh
    died; ``[bold red]`` styled it; escapes reached the terminal."""
    import rich.console

    screen = io.StringIO()
    real = rich.console.Console
    monkeypatch.setattr(rich.console, "Console", lambda: real(file=screen, force_terminal=True, width=200))
    view = make_view(_Terminal())
    view.update(_hostile(TaskState.RUNNING, progress=0.5))
    view.progress.refresh()  # type: ignore[attr-defined]
    view.update(_hostile(TaskState.SUCCEEDED, result=1, finished_at="2026-01-01T00:00:01Z"))
    shown = screen.getvalue()
    assert "[/var/data] [bold red]" in shown and "\\x1b]0;pwned" in shown
    assert "\x1b]0;pwned" not in shown and "\x1b[2J" not in shown


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True
