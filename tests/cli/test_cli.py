"""``sse-tasks serve`` as a user runs it: a real process, curl, Ctrl-C/SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from _support import free_port, submit_sync

from sse_tasks.cli import main


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    # memory://, whatever broker other tests' session fixtures left in os.environ.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    env["SSE_TASKS_HEARTBEAT"] = "0.5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/tasks", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("server did not start: " + proc.stderr.read().decode() if proc.stderr else "")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_session(served: tuple[subprocess.Popen[bytes], str]) -> None:
    _, url = served
    created = subprocess.run(
        [
            "curl",
            "-s",
            "-i",
            "-X",
            "POST",
            url + "/tasks",
            "-H",
            "content-type: application/json",
            "-d",
            '{"name":"count","params":{"n":5,"interval":0.05}}',
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    head, _, body = created.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 202")
    task = json.loads(body)
    assert f"location: /tasks/{task['id']}" in head
    # curl -N prints the stream and exits by itself once the task has ended.
    followed = subprocess.run(
        ["curl", "-sN", url + f"/tasks/{task['id']}/events"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert followed.startswith("retry: 2000\n\n")
    types = [line.split(": ", 1)[1] for line in followed.splitlines() if line.startswith("event:")]
    assert types[-1] == "task.succeeded"
    assert "task.progress" in types


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_sigterm_with_open_streams_and_running_tasks(
    served: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = served
    task = submit_sync(url, "sleep", seconds=600)
    follower = subprocess.Popen(["curl", "-sN", url + f"/tasks/{task['id']}/events"], stdout=subprocess.PIPE)
    watcher = subprocess.Popen(["curl", "-sN", url + "/events"], stdout=subprocess.PIPE)
    # Both streams are open once the task shows up as running in its own stream.
    assert follower.stdout is not None and watcher.stdout is not None
    line = b""
    while b"task.running" not in line:
        line = follower.stdout.readline()
        assert line, "stream ended early"
    assert watcher.stdout.readline() == b"retry: 2000\n"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.
    assert proc.wait(30) in (0, -signal.SIGTERM)
    elapsed = time.monotonic() - started
    rest = follower.communicate(timeout=10)[0].decode()
    everything = watcher.communicate(timeout=10)[0].decode()
    # Grace (5 s) plus the signal's detection: well under the 30 s we allow.
    assert elapsed < 20
    assert "event: task.cancelled" in rest
    assert "server shutting down" in rest
    assert "event: task.cancelled" in everything
    assert follower.returncode == 0 and watcher.returncode == 0  # the server ended them


def test_workers_need_a_shared_broker() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["serve", "--workers", "2"], env={"SSE_TASKS_BROKER": ""})
    assert result.exit_code == 2
    assert "redis://" in result.output


def test_app_option_must_name_a_hub() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["serve", "--app", "os:path"])
    assert result.exit_code == 2
    assert "not a TaskHub" in result.output
