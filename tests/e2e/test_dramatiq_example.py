"""The Dramatiq example run as its two commands (docs/engines.md, README)::

    dramatiq examples.dramatiq_app
    sse-tasks serve --app examples.dramatiq_app:hub

with ``SSE_TASKS_BROKER`` pointing at database 0 of the session's redis-server and
``DRAMATIQ_REDIS_URL`` unset (the example puts Dramatiq on the next database by itself):
a ``count`` posted to the hub and followed to its result with the Python client, and one
sent with ``count.send()`` from another process.
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
from _support import ROOT, Proc, answers, check_demo_tasks, free_port, spawn, stop_all, wait_until

pytest.importorskip("dramatiq", reason="dramatiq is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("dramatiq_example")

BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
TASK_TIMEOUT = 30.0


@dataclass
class Example:
    url: str
    env: dict[str, str]
    processes: list[Proc]

    def logs(self) -> str:
        return "\n".join(f"--- {p.what}:\n{p.text()[-3000:]}" for p in self.processes)

    def until(self, condition: Any, what: str, timeout: float) -> Any:
        def alive_and_true() -> Any:
            for process in self.processes:
                assert process.proc.poll() is None, f"{process.what} exited:\n{self.logs()}"
            return condition()

        return wait_until(alive_and_true, what, timeout, details=self.logs)


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[Example]:
    import redis

    for tool in ("dramatiq", "sse-tasks"):
        if not (BIN / tool).exists():
            pytest.skip(f"{BIN / tool} is not installed (pip install -e '.[test]')")
    base = redis_url.partition("?")[0].rsplit("/", 1)[0]
    clients = [redis.Redis.from_url(f"{base}/0"), redis.Redis.from_url(f"{base}/1")]
    for client in clients:
        client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "DRAMATIQ_"))}
    env["SSE_TASKS_BROKER"] = f"{base}/0"  # and no DRAMATIQ_REDIS_URL: the example's default
    port = free_port()
    worker = spawn("worker", [str(BIN / "dramatiq"), "examples.dramatiq_app"], env=env, cwd=ROOT)
    server = spawn(
        "server",
        [str(BIN / "sse-tasks"), "serve", "--app", "examples.dramatiq_app:hub", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    running = Example(f"http://127.0.0.1:{port}", env, [worker, server])
    try:
        running.until(lambda: "is ready for action" in worker.text(), "the worker is ready", READY_TIMEOUT)
        running.until(lambda: answers(running.url + "/tasks"), "GET /tasks answered 200", READY_TIMEOUT)
        yield running
    finally:
        stop_all([server, worker])
        for client in clients:
            client.flushdb()
            client.close()


def test_a_posted_count_is_followed_to_its_result(example: Example) -> None:
    from sse_tasks import Client

    with Client(example.url, timeout=10) as client:
        task = client.submit("count", n=3, interval=0.05)
        snapshots = list(client.follow(task.id))
    assert snapshots[-1].state == "succeeded", example.logs()
    assert snapshots[-1].result == {"count": 3}
    progress = [s.progress for s in snapshots if s.progress is not None]
    assert progress and progress == sorted(progress)
    # Dramatiq's Redis is the next database: its queue's keys are there, not in the hub's.
    import redis

    base = example.env["SSE_TASKS_BROKER"].rsplit("/", 1)[0]
    with redis.Redis.from_url(f"{base}/1") as dramatiq_db:
        assert dramatiq_db.keys("dramatiq:*"), "no Dramatiq keys in database 1"


def test_a_message_sent_from_another_process_shows_up(example: Example) -> None:
    code = "from examples.dramatiq_app import count; print(count.send(n=2, interval=0.01).message_id)"
    sent = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=example.env, capture_output=True, text=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip().splitlines()[-1]

    def finished() -> dict[str, Any] | None:
        answer = httpx.get(f"{example.url}/tasks/{message_id}", timeout=5)
        task: dict[str, Any] = answer.json()
        return task if answer.status_code == 200 and task["state"] == "succeeded" else None

    task = example.until(finished, "the sent count succeeded", TASK_TIMEOUT)
    assert task["name"] == "count" and task["result"] == {"count": 2}
    assert task["created_at"] <= task["started_at"] <= task["finished_at"]


def test_generate_fail_sleep_and_a_cancelled_count_through_watch_and_curl(example: Example) -> None:
    check_demo_tasks(example.url, example.logs)


def test_the_demo_page_runs_count_and_generate(example: Example, page: Any) -> None:
    """The demo page works unchanged against Dramatiq: both tasks run on its worker."""
    from _browser import check_demo_page

    check_demo_page(page, example.url, 30.0)
