"""The Celery example run as its two commands, followed by every kind of client.

From the repository root, as a new user would (``docs/celery.md``, "Try it")::

    celery -A examples.celery_app worker --loglevel=INFO
    sse-tasks serve --app examples.celery_app:hub

with ``SSE_TASKS_BROKER`` pointing at database 0 of the session's redis-server and
``CELERY_BROKER_URL`` unset: the example must put Celery's broker on the next database
(1) by itself. A real prefork worker, a real uvicorn, then curl, Chromium on the demo
page, ``sse-tasks watch``, the Python client and ``.delay()`` from this process.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _support import ROOT, answers, free_port, redis_db, submit_sync, wait_until

pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[test]')")
pytest.importorskip("redis", reason="the redis client is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("celery_example")

BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
TASK_TIMEOUT = 30.0
COUNT_BODY = '{"name": "count", "params": {"n": 5, "interval": 0.05}}'


@dataclass
class Process:
    """A command started in its own process group, its output in a log file."""

    what: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.what} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown (celery), graceful (uvicorn)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


def spawn(what: str, command: list[str], env: dict[str, str]) -> Process:
    log = Path(tempfile.mkstemp(prefix=f"celery-example-{what}-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(what, proc, log)


def while_alive(condition: Callable[[], Any], what: str, processes: list[Process], timeout: float) -> Any:
    """:func:`wait_until` ``condition`` while ``processes`` stay up; fails with their logs."""

    def alive_and_true() -> Any:
        for process in processes:
            process.check_alive()
        return condition()

    def logs() -> str:
        return "\n".join(f"--- {p.what}:\n{p.text()[-3000:]}" for p in processes)

    return wait_until(alive_and_true, what, timeout, details=logs)


@dataclass
class Example:
    url: str
    worker: Process
    server: Process
    env: dict[str, str]
    hub_url: str
    celery_url: str


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[Example]:
    """The two commands of docs/celery.md, running; both Redis databases flushed before and after."""
    import redis

    for tool in ("celery", "sse-tasks"):
        if not (BIN / tool).exists():
            pytest.skip(f"{BIN / tool} is not installed (pip install -e '.[test]')")
    hub_url, celery_url = redis_db(redis_url, 0), redis_db(redis_url, 1)
    clients = [redis.Redis.from_url(hub_url), redis.Redis.from_url(celery_url)]
    for client in clients:
        client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "CELERY_"))}
    env["SSE_TASKS_BROKER"] = hub_url  # and no CELERY_BROKER_URL: the example's default
    port = free_port()
    hostname = f"example-{os.getpid()}-{time.monotonic_ns()}@%h"
    worker = spawn(
        "worker",
        [
            str(BIN / "celery"),
            "-A",
            "examples.celery_app",
            "worker",
            "--loglevel=INFO",
            "--concurrency=2",
            f"--hostname={hostname}",
        ],
        env,
    )
    server = spawn(
        "server",
        [str(BIN / "sse-tasks"), "serve", "--app", "examples.celery_app:hub", "--port", str(port)],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        both = [worker, server]
        while_alive(lambda: " ready." in worker.text(), "the worker logged ' ready.'", both, READY_TIMEOUT)
        while_alive(lambda: answers(url + "/tasks"), "GET /tasks answered 200", both, READY_TIMEOUT)
        yield Example(url, worker, server, env, hub_url, celery_url)
    finally:
        server.stop()
        worker.stop()
        for client in clients:
            client.flushdb()
            client.close()


def parse_sse(text: str) -> list[tuple[str | None, dict[str, Any] | None]]:
    """``(event, data)`` of each event of a raw SSE body (data parsed as JSON when there is some)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if name or data:
            events.append((name, json.loads("\n".join(data)) if data else None))
    return events


def test_the_worker_uses_the_next_database_for_celery(example: Example) -> None:
    port = example.hub_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    # Celery prints its transport as redis://:**@127.0.0.1:<port>/1
    banner = example.worker.text()
    assert f"127.0.0.1:{port}/1" in banner, banner[-2000:]
    assert "concurrency: 2 (prefork)" in banner, banner[-2000:]  # the default pool
    page = httpx.get(example.url + "/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]  # the hub has every demo name: the page


def test_curl_posts_count_and_follows_it_to_its_result(example: Example) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    posted = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            "10",
            "-X",
            "POST",
            f"{example.url}/tasks",
            "-H",
            "content-type: application/json",
            "-d",
            COUNT_BODY,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    task_id = json.loads(posted.stdout)["id"]
    followed = subprocess.run(
        [curl, "-sN", "--max-time", str(TASK_TIMEOUT), f"{example.url}/tasks/{task_id}/events"],
        capture_output=True,
        text=True,
        timeout=TASK_TIMEOUT + 10,
        check=False,
    )
    assert followed.returncode == 0, (followed.returncode, followed.stdout[-2000:])  # the server ended it
    events = [(name, data) for name, data in parse_sse(followed.stdout) if name and name.startswith("task.")]
    assert events, followed.stdout
    assert events[-1][0] == "task.succeeded"
    final = events[-1][1]
    assert final is not None
    assert final["id"] == task_id and final["name"] == "count"
    assert final["result"] == {"count": 5}
    assert final["progress"] == 1.0
    progress = [data["progress"] for name, data in events if name == "task.progress" and data]
    assert progress == sorted(progress)  # celery-progress's current/total, in order
    assert all(data and data["id"] == task_id for _, data in events)


def test_the_demo_page_runs_count_and_generate_on_the_worker(example: Example, page: Any) -> None:
    from _browser import check_demo_page

    ids = check_demo_page(page, example.url, TASK_TIMEOUT)
    # Both ran on the Celery worker, not in the server.
    for task_id in ids:
        assert f"[{task_id}] succeeded" in example.worker.text()


def test_sse_tasks_watch_exits_0_for_a_count(example: Example) -> None:
    task_id = submit_sync(example.url, "count", n=3, interval=0.05)["id"]
    watched = subprocess.run(
        [str(BIN / "sse-tasks"), "watch", f"{example.url}/tasks/{task_id}"],
        cwd=ROOT,
        env=example.env,
        capture_output=True,
        text=True,
        timeout=TASK_TIMEOUT,
        check=False,
    )
    assert watched.returncode == 0, (watched.stdout, watched.stderr)
    assert "succeeded" in watched.stdout
    assert '{"count": 3}' in watched.stdout


def test_the_python_client_follows_count_and_generate(example: Example) -> None:
    from sse_tasks import Client, OutputChunk
    from sse_tasks.demo import generated_text

    with Client(example.url, timeout=10) as client:
        task = client.submit("count", n=3, interval=0.05)
        snapshots = []
        for snapshot in client.follow(task.id):
            snapshots.append(snapshot)
            assert len(snapshots) < 100
        assert snapshots[-1].state == "succeeded"
        assert snapshots[-1].result == {"count": 3}
        assert [s.progress for s in snapshots if s.progress is not None] == sorted(
            s.progress for s in snapshots if s.progress is not None
        )

        task = client.submit("generate", words=12, delay=0.01)
        text, last = "", None
        for item in client.follow(task.id, output=True):
            if isinstance(item, OutputChunk):
                text += item.text if item.kind == "output" else ""
            else:
                last = item
        assert last is not None and last.state == "succeeded"
        assert last.result == {"words": 12}
        assert text == generated_text(12)
        assert client.output(task.id) == generated_text(12)


@pytest.fixture
def celery_example(example: Example, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``examples.celery_app`` imported here, configured as the commands were; its hook
    disconnected afterwards (it recognizes tasks by name, and later tests have a ``fail``)."""
    import sse_tasks.celery

    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("SSE_TASKS_BROKER", example.hub_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    module = importlib.import_module("examples.celery_app")
    if module.SSE_TASKS_BROKER != example.hub_url:  # imported earlier with other settings
        module = importlib.reload(module)
    assert module.CELERY_BROKER_URL == example.celery_url
    hook = sse_tasks.celery.connect(module.celery_app)  # the hook the module connected
    hook.connect()
    yield module
    hook.disconnect()


def test_delay_from_this_process_shows_up_in_get_tasks(example: Example, celery_example: ModuleType) -> None:
    result = celery_example.count.delay(n=2, interval=0.01)
    assert result.get(timeout=TASK_TIMEOUT) == {"count": 2}  # Celery's own result backend

    def listed() -> dict[str, Any] | None:
        tasks = httpx.get(f"{example.url}/tasks", params={"name": "count"}, timeout=5).json()["tasks"]
        mine = [t for t in tasks if t["id"] == result.id and t["state"] == "succeeded"]
        return mine[0] if mine else None

    task = while_alive(listed, "the .delay() task listed as succeeded", [example.server], TASK_TIMEOUT)
    assert task["name"] == "count"
    assert task["result"] == {"count": 2}
    assert task["created_at"] <= task["started_at"] <= task["finished_at"]
    import redis

    # Celery's result is in its own database (1), the hub's snapshot in database 0.
    for url, celery_keys in ((example.celery_url, 1), (example.hub_url, 0)):
        with redis.Redis.from_url(url) as client:
            assert client.exists(f"celery-task-meta-{result.id}") == celery_keys, url
