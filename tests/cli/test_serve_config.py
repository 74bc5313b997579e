"""``serve``'s configuration is one object: checked once, handed on, not left in the environment.

In one process ``serve`` hands its :class:`ServeConfig` to the app, the protocol and
uvicorn; ``--workers`` get it through one variable and apply every option as well.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import free_port
from click.testing import CliRunner
from sse_starlette.sse import AppStatus

from sse_tasks.cli import ServeConfig, main
from sse_tasks.cli.config import WORKERS_ENV_VAR, ServeConfigError

SECRET = "serve-config-secret-of-enough-length"

# The broker the hub got and the $SSE_TASKS_BROKER the module saw while it was imported.
APP = """
import os
from sse_tasks import TaskHub

SEEN_BROKER = os.environ.get("SSE_TASKS_BROKER")
hub = TaskHub()


@hub.task
def broker_kind() -> dict:
    return {"kind": type(hub.broker).__name__, "seen": SEEN_BROKER}
"""


def sse_tasks_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("SSE_TASKS_")}


# -- the object ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "option"),
    [
        ({"port": 65536}, "--port"),
        ({"port": -1}, "--port"),
        ({"port": "80"}, "--port"),
        ({"port": True}, "--port"),
        ({"workers": 0}, "--workers"),
        ({"workers": 65}, "--workers"),
        ({"workers": 2}, "--workers"),  # on memory://
        ({"workers": 2, "broker": "memory://"}, "--workers"),
        ({"heartbeat": -0.5}, "--heartbeat"),
        ({"heartbeat": float("nan")}, "--heartbeat"),
        ({"heartbeat": float("inf")}, "--heartbeat"),
        ({"log_level": "loud"}, "--log-level"),
        ({"token_secret": "short"}, "--token-secret"),
        ({"token_secret": 1234567890123456789}, "--token-secret"),
        ({"cors_origins": ("a.example",)}, "--cors-origin"),
        ({"cors_origins": ("*",), "cors_credentials": True}, "--cors-origin"),
        ({"cors_origins": "https://a.example"}, "--cors-origin"),
        ({"demo": "yes"}, "--demo"),
        ({"max_streams": -1}, "--max-streams"),
        ({"max_streams_per_client": 0}, "--max-streams-per-client"),
        ({"max_stream_lifetime": 0.5}, "--max-stream-lifetime"),
        ({"timeout_keep_alive": -1}, "--timeout-keep-alive"),
        ({"limit_concurrency": 0}, "--limit-concurrency"),
        ({"header_timeout": 0}, "--header-timeout"),
        ({"max_header_size": 1023}, "--max-header-size"),
        ({"root_path": "jobs"}, "--root-path"),
        ({"root_path": "/a/../b"}, "--root-path"),
        ({"forwarded_allow_ips": "proxy.example"}, "--forwarded-allow-ips"),
        ({"app": "no_colon"}, "--app"),
    ],
)
def test_invalid_values_are_refused_in_one_line(values: dict[str, Any], option: str) -> None:
    with pytest.raises(ServeConfigError) as refused:
        ServeConfig(**values)
    assert refused.value.option == option
    assert str(refused.value).startswith(f"{option}: ")
    assert "\n" not in str(refused.value)


def test_the_token_secret_is_not_shown() -> None:
    assert SECRET not in repr(ServeConfig(token_secret=SECRET))
    for wrong in ("short-secret", b"a-bytes-secret-of-enough-length"):
        with pytest.raises(ServeConfigError) as refused:
            ServeConfig(token_secret=wrong)  # type: ignore[arg-type]
        shown = str(refused.value)
        assert shown.startswith("--token-secret: ")
        assert "short-secret" not in shown and "a-bytes-secret" not in shown
    assert ServeConfig(token_secret="x" * 16).token_secret == "x" * 16  # 16 bytes are enough


def test_values_are_normalised_and_frozen() -> None:
    config = ServeConfig(root_path="/jobs/", log_level="WARNING", cors_origins=("https://a.example",))
    assert (config.root_path, config.log_level) == ("/jobs", "warning")
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_json_round_trip_and_refusals() -> None:
    config = ServeConfig(
        app="m:hub",
        broker="redis://127.0.0.1:6379/0",
        workers=2,
        heartbeat=0.5,
        token_secret=SECRET,
        cors_origins=("https://a.example", "https://b.example"),
        cors_credentials=True,
        max_stream_lifetime=60,
        header_timeout=1.5,
        max_header_size=2048,
        root_path="/jobs",
        forwarded_allow_ips="10.0.0.0/8,127.0.0.1",
    )
    assert ServeConfig.from_json(config.to_json()) == config
    assert ServeConfig.from_json("{}") == ServeConfig()
    for text, says in (
        ("[]", "not list"),
        ("{", "JSON object"),
        ('{"port": 80, "colour": "red"}', "colour"),
        ('{"port": "80"}', "--port"),
        ('{"max_header_size": 10}', "--max-header-size"),
    ):
        with pytest.raises(ValueError, match=says):
            ServeConfig.from_json(text)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--workers", "2"], "'--workers'"),
        (["--workers", "65", "--broker", "redis://127.0.0.1:1/0"], "'--workers'"),
        (["--port", "65536"], "'--port'"),
        (["--heartbeat", "-1"], "'--heartbeat'"),
        (["--header-timeout", "0"], "'--header-timeout'"),
        (["--max-header-size", "1000"], "'--max-header-size'"),
        (["--max-stream-lifetime", "0.5"], "'--max-stream-lifetime'"),
        (["--token-secret", "short"], "'--token-secret'"),
        (["--cors-origin", "*", "--cors-credentials"], "'--cors-origin'"),
        (["--root-path", "jobs"], "'--root-path'"),
        (["--app", "no_colon"], "'--app'"),
    ],
)
def test_the_command_refuses_what_the_object_refuses(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, ["serve", *args], env={"SSE_TASKS_BROKER": None})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and option in lines[0], result.output
    assert "Traceback" not in result.output


# -- one process -------------------------------------------------------------------


def wait_until_serving(url: str, stopped: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert not stopped(), "the server exited"
        try:
            if httpx.get(url + "/tasks", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a server that is starting, bounded by the deadline
    raise AssertionError("the server did not answer GET /tasks")


def head_refused(port: int, header_bytes: int) -> bool:
    """Send a complete request with a header of ``header_bytes``: refused (431 or reset)?"""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = b"GET /tasks HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * header_bytes + b"\r\n\r\n"
        data = b""
        try:
            sock.sendall(head)
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    if data.startswith(b"HTTP/1.1 200 "):
        return False
    assert data == b"" or data.startswith(b"HTTP/1.1 431 "), data[:100]
    return True


def cut_within(port: int, seconds: float) -> bool:
    """A connection that never completes its request head is closed within ``seconds``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /tasks HTTP/1.1\r\n")
        sock.settimeout(seconds)
        try:
            return sock.recv(4096) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def pinged_within(url: str, seconds: float) -> bool:
    """``/events`` sends a heartbeat (``: ping``) within ``seconds`` of opening."""
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url + "/events", timeout=seconds) as stream:
        for line in stream.iter_lines():
            if line.startswith(": ping"):
                return True
            if time.monotonic() > deadline:
                return False
    return False


def check_the_options(url: str) -> dict[str, Any]:
    """Every option given to :func:`started` applied, over HTTP; the broker task's result."""
    port = int(url.rsplit(":", 1)[1])
    for _ in range(4):  # new connections each time: with --workers, more than one worker
        assert not head_refused(port, 1000)
        assert head_refused(port, 4000)  # --max-header-size 2048
        cors = httpx.get(url + "/tasks", headers={"origin": "https://a.example"}, timeout=10)
        assert cors.headers["access-control-allow-origin"] == "https://a.example"
    with ThreadPoolExecutor(4) as pool:  # four connections at once: their timeouts run together
        assert all(pool.map(lambda _: cut_within(port, 6), range(4)))  # --header-timeout 2 (not 10)
    assert pinged_within(url, 5)  # --heartbeat 0.5 (the default would be 15)
    created = httpx.post(url + "/tasks", json={"name": "broker_kind"}, timeout=10)
    assert created.status_code == 202
    task_id, token = created.json()["id"], created.json()["token"]  # --token-secret
    assert created.headers["location"] == f"/jobs/tasks/{task_id}"  # --root-path /jobs
    for _ in range(4):
        assert httpx.get(f"{url}/tasks/{task_id}", timeout=10).status_code == 404  # no token
    deadline = time.monotonic() + 30
    while True:
        got = httpx.get(f"{url}/tasks/{task_id}", params={"token": token}, timeout=10)
        assert got.status_code == 200, got.text
        if got.json()["state"] == "succeeded":
            return dict(got.json()["result"])
        assert time.monotonic() < deadline, got.text
        time.sleep(0.05)  # polling the task until it ends, bounded by the deadline


OPTIONS = (
    "--max-header-size",
    "2048",
    "--header-timeout",
    "2",  # not 1: a loaded machine can take a second to hand a request's head to the server
    "--heartbeat",
    "0.5",
    "--root-path",
    "/jobs",
    "--token-secret",
    SECRET,
    "--cors-origin",
    "https://a.example",
    "--log-level",
    "warning",
)


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"configapp_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))  # sys.path as it was afterwards
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def uvicorn_logging() -> Iterator[None]:
    """``serve`` sets up uvicorn's and the sse_tasks logger's handlers in this process."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "sse_tasks")
    saved = {name: logging.getLogger(name) for name in names}
    state = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for name, lg in saved.items()}
    yield
    for name, logger in saved.items():
        logger.handlers[:], logger.level, logger.propagate, logger.disabled = state[name]


def test_an_in_process_run_leaves_the_environment_as_it_was(app_module: str, uvicorn_logging: None) -> None:
    before = sse_tasks_environ()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    done = threading.Event()
    found: dict[str, Any] = {}

    def client() -> None:
        try:
            wait_until_serving(url, done.is_set)
            found["environ while serving"] = sse_tasks_environ()
            found["result"] = check_the_options(url)
        except BaseException as exc:
            found["error"] = exc
        finally:
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: a graceful stop

    # uvicorn raises the signal again once it has stopped: let that do nothing here.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        args = ["serve", "--port", str(port), "--app", f"{app_module}:hub", "--broker", "memory://"]
        result = CliRunner().invoke(main, [*args, *OPTIONS])
    finally:
        done.set()
        thread.join(120)
        signal.signal(signal.SIGTERM, previous)
        # sse-starlette's patch of uvicorn's exit handler set its process-wide flag:
        # every later hub in this process would be shutting down.
        AppStatus.should_exit = False
    if "error" in found:
        raise found["error"]
    assert result.exit_code == 0, result.output
    assert sse_tasks_environ() == before
    assert found["environ while serving"] == before
    assert WORKERS_ENV_VAR not in os.environ
    # The module saw --broker while it was imported, and its TaskHub() took it.
    assert found["result"] == {"kind": "MemoryBroker", "seen": "memory://"}
    assert sys.modules[app_module].SEEN_BROKER == "memory://"


# -- --workers ---------------------------------------------------------------------


@pytest.fixture
def started() -> Iterator[Callable[..., str]]:
    """``started(cwd, *args)``: ``sse-tasks serve`` in a process (and its workers), stopped afterwards."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(cwd: Path, *args: str) -> str:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), *args],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(cwd)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, lambda: proc.poll() is not None)
        return url

    yield start
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: workers left behind, if any
        except ProcessLookupError:
            pass
        proc.wait(10)


def test_workers_apply_every_option(
    tmp_path: Path, started: Callable[..., str], redis_url: str, redis_db: int
) -> None:
    (tmp_path / "workerapp.py").write_text(APP)
    args = ("--workers", "2", "--app", "workerapp:hub", "--broker", redis_url, *OPTIONS)
    url = started(tmp_path, *args)
    # Only the workers serve: each read the configuration from the one variable, and the
    # app module in each saw --broker as $SSE_TASKS_BROKER while it was imported.
    assert check_the_options(url) == {"kind": "RedisBroker", "seen": redis_url}
