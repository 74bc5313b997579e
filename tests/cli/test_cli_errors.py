"""``sse-tasks serve`` with a setting that cannot work: one line naming the fix, exit 2.

The command runs in a real process, as the ``sse-tasks`` script runs it (the current
directory is not on ``sys.path`` by itself). A missing extra is simulated by an import
blocker in that process, so these tests do not depend on what is installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _support import ROOT, free_port

# Runs the CLI like the console script does: sys.path[0] is not the current directory
# (for ``-c`` it would be ""), and modules named in $BLOCK_IMPORTS cannot be imported.
RUN_CLI = """
import os, sys
del sys.path[0]
blocked = set(filter(None, os.environ.get("BLOCK_IMPORTS", "").split(",")))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    if name.partition(".")[0] in blocked:
        del sys.modules[name]
from sse_tasks.cli import main
main(prog_name="sse-tasks")
"""

APP = """
from sse_tasks import TaskHub

hub = TaskHub()
NOT_A_HUB = 42


def make_hub():
    made = TaskHub()

    @made.task
    def made_by_the_factory() -> str:
        return "made"

    return made


def make_other():
    return {"not": "a hub"}


def make_broken():
    raise RuntimeError("no configuration here")


class Lazy:
    def __getattr__(self, name):
        raise RuntimeError(f"{name} is not set up yet")


lazy = Lazy()
"""

# An ASGI app and no TaskHub at all (the hub lives elsewhere, or nowhere).
NO_HUB_APP = """
from starlette.applications import Starlette

app = Starlette()


async def asgi(scope, receive, send):
    pass
"""

# An app that reads its settings from the environment, as the Celery example does: it
# must see $SSE_TASKS_BROKER only as the user set it, and a refusal is one line.
ENV_APP = """
import os
from sse_tasks import TaskHub

broker = os.environ.get("SSE_TASKS_BROKER")
if broker is not None and not broker.startswith("redis://"):
    raise ValueError(f"this app needs a redis:// broker, not {broker!r}")
hub = TaskHub()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    return {**env, **extra}


def cli(
    *args: str, block: tuple[str, ...] = (), cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=clean_env(BLOCK_IMPORTS=",".join(block), **(env or {})),
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``Error: …`` line of a refused command: nothing else, click's usage lines
    included, and exit status 2."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), done.stderr
    return lines[0]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "envapp.py").write_text(ENV_APP)
    (tmp_path / "nohubapp.py").write_text(NO_HUB_APP)
    return tmp_path


def test_a_redis_broker_without_the_redis_package() -> None:
    for workers in ("1", "2"):
        done = cli(
            "serve",
            "--port",
            "0",
            "--broker",
            "redis://127.0.0.1:1/0",
            "--workers",
            workers,
            block=("redis",),
        )
        line = error_line(done)
        assert "redis://127.0.0.1:1/0" in line
        assert "pip install 'sse-tasks[redis]'" in line


def test_an_unknown_broker() -> None:
    line = error_line(cli("serve", "--port", "0", "--broker", "bogus://x"))
    assert "'bogus://x'" in line and "memory://" in line and "redis://" in line
    from_env = error_line(cli("serve", "--port", "0", env={"SSE_TASKS_BROKER": "bogus://y"}))
    assert "'bogus://y'" in from_env


def test_a_redis_setting_redis_py_refuses_only_as_it_connects() -> None:
    line = error_line(cli("serve", "--port", "0", "--broker", "rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus"))
    assert "--broker" in line and "Invalid SSL Certificate Requirements Flag: bogus" in line


def test_metrics_without_prometheus_client() -> None:
    line = error_line(cli("serve", "--port", "0", "--metrics", block=("prometheus_client",)))
    assert "pip install 'sse-tasks[metrics]'" in line


#: A broker several workers can share (never reached: the address is refused first).
BROKER = {"1": (), "2": ("--broker", "redis://127.0.0.1:1/0")}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_address_it_cannot_listen_on(workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        line = error_line(cli("serve", "--port", port, "--workers", workers, *BROKER[workers]))
    assert line == f"Error: cannot listen on 127.0.0.1:{port}: the port is in use"
    line = error_line(cli("serve", "--host", "nosuchhost.invalid", "--port", "0"))
    assert line.startswith("Error: cannot listen on nosuchhost.invalid:0: ")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module_here:hub", "no module named 'no_such_module_here'"),
        ("tinyapp:nope", "has no attribute 'nope'"),
        ("tinyapp:NOT_A_HUB", "not a TaskHub"),
        ("tinyapp", "expected module:attribute"),
    ],
)
def test_an_app_that_does_not_load(app_dir: Path, spec: str, says: str) -> None:
    line = error_line(cli("serve", "--port", "0", "--app", spec, env={"PYTHONPATH": str(app_dir)}))
    assert says in line
    assert spec in line


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        (
            "tinyapp:make_other",
            "Error: --app 'tinyapp:make_other': make_other() returned a dict, not a TaskHub: "
            "did you mean tinyapp:hub?",
        ),
        (
            "tinyapp:make_broken",
            "Error: --app 'tinyapp:make_broken': calling make_broken() failed: "
            "RuntimeError: no configuration here",
        ),
        (
            "tinyapp:NOT_A_HUB",
            "Error: --app 'tinyapp:NOT_A_HUB' is an int, not a TaskHub: did you mean tinyapp:hub?",
        ),
        (
            "tinyapp:lazy.hub",
            "Error: --app 'tinyapp:lazy.hub': reading 'hub' failed: RuntimeError: hub is not set up yet",
        ),
        (
            "nohubapp:app",
            "Error: --app 'nohubapp:app' is a Starlette application, not a TaskHub: 'nohubapp' has "
            "no TaskHub at module level: name a TaskHub (module:hub) or a function that returns one",
        ),
        (
            "nohubapp:asgi",
            "Error: --app 'nohubapp:asgi' is an ASGI application (a function), not a TaskHub: "
            "'nohubapp' has no TaskHub at module level: name a TaskHub (module:hub) or a function "
            "that returns one",
        ),
    ],
)
def test_an_app_that_is_not_a_hub_names_what_to_serve(app_dir: Path, spec: str, line: str) -> None:
    assert error_line(cli("serve", "--port", "0", "--app", spec, env={"PYTHONPATH": str(app_dir)})) == line


def test_the_asgi_app_of_an_example_names_its_hub() -> None:
    """The examples define an app and a hub: naming the app is the easy mistake."""
    line = error_line(cli("serve", "--port", "0", "--app", "examples.background_tasks:app", cwd=ROOT))
    assert line == (
        "Error: --app 'examples.background_tasks:app' is a FastAPI application, not a TaskHub: "
        "did you mean examples.background_tasks:hub?"
    )


def test_an_app_that_raises_while_imported(app_dir: Path) -> None:
    env = {"PYTHONPATH": str(app_dir), "SSE_TASKS_BROKER": "memory://"}
    line = error_line(cli("serve", "--port", "0", "--app", "envapp:hub", env=env))
    assert "envapp" in line and "ValueError" in line and "needs a redis:// broker" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "http"], "'--port'"),
        (["--log-level", "loud"], "'--log-level'"),
        (["--max-header-size", "10"], "'--max-header-size'"),
        (["--timeout-keep-alive", "-1"], "'--timeout-keep-alive'"),
        (["--root-path", "jobs"], "'--root-path'"),
        (["--root-path", "/jobs/../admin"], "'--root-path'"),
        (["--root-path", "//evil.example"], "'--root-path'"),
        (["--root-path", "/jobs\r\nSet-Cookie: x=1"], "'--root-path'"),
        (["--root-path", "/" + "a" * 300], "'--root-path'"),
        (["--forwarded-allow-ips", "proxy.example"], "'--forwarded-allow-ips'"),
    ],
)
def test_a_bad_option_value(args: list[str], says: str) -> None:
    # Told before the server's stack is imported: uvicorn and the stream responses
    # cannot be, here.
    assert says in error_line(cli("serve", *args, block=("uvicorn", "sse_starlette")))


def wait_until_serving(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(url + "/tasks", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a server that is starting, bounded by the deadline
    raise AssertionError("the server did not answer GET /tasks")


@pytest.fixture
def serve_in(app_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test (and their --workers), ended afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
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


def start(started: list[subprocess.Popen[bytes]], cwd: Path, *args: str) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "serve", "--port", str(port), *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, url)
    return url


def test_an_app_in_the_current_directory(app_dir: Path, serve_in: list[subprocess.Popen[bytes]]) -> None:
    url = start(serve_in, app_dir, "--app", "tinyapp:hub")
    assert httpx.get(url + "/tasks", timeout=10).json()["tasks"] == []


def test_a_factory_that_returns_a_hub(app_dir: Path, serve_in: list[subprocess.Popen[bytes]]) -> None:
    url = start(serve_in, app_dir, "--app", "tinyapp:make_hub")
    created = httpx.post(url + "/tasks", json={"name": "made_by_the_factory"}, timeout=10)
    assert created.status_code == 202  # the factory's hub, with the task it registered


def test_the_examples_from_the_repository_root(serve_in: list[subprocess.Popen[bytes]]) -> None:
    root = ROOT
    url = start(serve_in, root, "--app", "examples.starlette_mount:hub")
    assert httpx.get(url + "/tasks", timeout=10).status_code == 200


def test_workers_import_an_app_from_the_current_directory(
    app_dir: Path, serve_in: list[subprocess.Popen[bytes]], redis_url: str, redis_db: int
) -> None:
    # Only the workers serve: an answer means a worker imported tinyapp by itself.
    url = start(serve_in, app_dir, "--app", "tinyapp:hub", "--workers", "2", "--broker", redis_url)
    assert httpx.get(url + "/tasks", timeout=10).status_code == 200


def test_workers_serve_under_the_root_path_and_a_trusted_prefix(
    app_dir: Path, serve_in: list[subprocess.Popen[bytes]], redis_url: str, redis_db: int
) -> None:
    """uvicorn hands --root-path to its workers; each worker reads the trusted proxies itself."""
    url = start(serve_in, app_dir, "--workers", "2", "--broker", redis_url, "--root-path", "/jobs")
    for headers, root in (({}, "/jobs"), ({"X-Forwarded-Prefix": "/other"}, "/other")):
        created = httpx.post(url + "/tasks", json={"name": "sleep"}, headers=headers, timeout=10)
        assert created.headers["location"] == f"{root}/tasks/{created.json()['id']}"
    url = start(
        serve_in, app_dir, "--workers", "2", "--broker", redis_url, "--forwarded-allow-ips", "192.0.2.1"
    )
    created = httpx.post(
        url + "/tasks", json={"name": "sleep"}, headers={"X-Forwarded-Prefix": "/x"}, timeout=10
    )
    assert created.headers["location"] == f"/tasks/{created.json()['id']}"  # 127.0.0.1 is not trusted now


def test_an_app_sees_no_broker_it_was_not_given(
    app_dir: Path, serve_in: list[subprocess.Popen[bytes]]
) -> None:
    # Without --broker, serve must not put its default (memory://) into the app's environment.
    url = start(serve_in, app_dir, "--app", "envapp:hub")
    assert httpx.get(url + "/tasks", timeout=10).status_code == 200
