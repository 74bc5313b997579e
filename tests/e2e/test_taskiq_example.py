"""The taskiq example run as its two commands (``docs/engines.md``, taskiq)::

    taskiq worker examples.taskiq_app:broker
    sse-tasks serve --app examples.taskiq_app:hub

with ``SSE_TASKS_BROKER`` on database 0 of the session's redis-server and
``TASKIQ_REDIS_URL`` unset (the example puts taskiq's queue on database 1). A ``count``
POSTed to the hub and one kicked with ``.kiq()`` from another process both succeed,
with taskiq's own progress reports in their snapshots.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ROOT, Proc, check_demo_tasks, free_port, spawn, stop_all, wait_until

pytest.importorskip("taskiq_redis", reason="taskiq-redis is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("taskiq_example")

BIN = Path(sys.executable).parent


@dataclass
class Example:
    url: str
    env: dict[str, str]
    processes: list[Proc]

    def logs(self) -> str:
        return "\n".join(f"--- {p.what}:\n{p.text()[-3000:]}" for p in self.processes)


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[Example]:
    """The two commands, shared by the module's tests (its databases flushed before and after)."""
    import redis

    base = redis_url.rsplit("/", 1)[0]
    for db in (0, 1):
        with redis.Redis.from_url(f"{base}/{db}") as client:
            client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_")}
    env["SSE_TASKS_BROKER"] = base + "/0"
    port = free_port()
    worker = spawn("worker", [str(BIN / "taskiq"), "worker", "examples.taskiq_app:broker"], env=env, cwd=ROOT)
    server = spawn(
        "server",
        [str(BIN / "sse-tasks"), "serve", "--app", "examples.taskiq_app:hub", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    running = Example(f"http://127.0.0.1:{port}", env, [worker, server])
    try:

        def up() -> bool:
            for process in (worker, server):
                assert process.proc.poll() is None, running.logs()
            try:
                return httpx.get(f"{running.url}/tasks", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, "the server answers", 60, details=running.logs)
        yield running
    finally:
        stop_all([server, worker])
        for db in (0, 1):
            with redis.Redis.from_url(f"{base}/{db}") as client:
                client.flushdb()


def _succeeded(url: str, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = httpx.get(f"{url}/tasks/{task_id}", timeout=5).json()
    assert task.get("state") not in ("failed", "cancelled"), task
    return task if task.get("state") == "succeeded" else None


def test_two_commands_run_posted_and_kicked_tasks(example: Example) -> None:
    url, env = example.url, example.env
    posted = httpx.post(
        f"{url}/tasks", json={"name": "count", "params": {"n": 5, "interval": 0.05}}, timeout=10
    )
    assert posted.status_code == 202, posted.text
    posted_id = posted.json()["id"]
    task = wait_until(
        lambda: _succeeded(url, posted_id), "the POSTed count succeeded", 60, details=example.logs
    )
    assert task["result"] == {"count": 5} and task["message"] == "step 5 of 5"  # taskiq's progress tracker

    code = (
        "import asyncio, examples.taskiq_app as app\n"
        "async def main():\n"
        "    await app.broker.startup()\n"
        "    sent = await app.count.kiq(n=3, interval=0.01)\n"
        "    await app.broker.shutdown()\n"
        "    print(sent.task_id)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    kicked = out.stdout.strip().splitlines()[-1]
    task = wait_until(lambda: _succeeded(url, kicked), "the kicked count succeeded", 60, details=example.logs)
    assert task["result"] == {"count": 3} and task["message"] == "step 3 of 3"


def test_generate_fail_sleep_and_a_cancelled_count_through_watch_and_curl(example: Example) -> None:
    check_demo_tasks(example.url, example.logs)


def test_the_demo_page_runs_count_and_generate(example: Example, page: Any) -> None:
    """The demo page works unchanged against taskiq: both tasks run on its worker."""
    from _browser import check_demo_page

    check_demo_page(page, example.url, 30.0)


def test_a_task_that_outlasts_redis_pys_read_timeout_succeeds(example: Example) -> None:
    """The worker's BRPOP waits past redis-py 8's default 5 s read timeout: without the
    example's ``socket_timeout=None`` its process dies meanwhile, with the task it runs."""
    posted = httpx.post(f"{example.url}/tasks", json={"name": "sleep", "params": {"seconds": 6}}, timeout=10)
    assert posted.status_code == 202, posted.text
    task_id = posted.json()["id"]
    task = wait_until(lambda: _ended(example.url, task_id), "the sleep ended", 60, details=example.logs)
    assert (task["state"], task["result"]) == ("succeeded", {"slept": 6}), example.logs()
    assert "is dead" not in example.logs()


def _ended(url: str, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = httpx.get(f"{url}/tasks/{task_id}", timeout=5).json()
    return task if task.get("state") in ("succeeded", "failed", "cancelled") else None
