"""The RQ example run as its two commands (README, docs/engines.md), from the checkout::

    rq worker --worker-class sse_tasks.rq.Worker --url "$RQ_REDIS_URL"
    sse-tasks serve --app examples.rq_app:hub

A ``count`` posted over HTTP and one enqueued with RQ's own ``Queue.enqueue`` from another
process are both followed to ``succeeded`` with the Python client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ROOT, answers, check_demo_tasks, free_port, spawn, stop_all, wait_until

from sse_tasks import TaskState
from sse_tasks.client import Client

pytest.importorskip("rq", reason="rq is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("rq_example")

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    base = redis_url.partition("?")[0].rsplit("/", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "RQ_"))}
    env.update(SSE_TASKS_BROKER=f"{base}/0", RQ_REDIS_URL=f"{base}/5")
    port = free_port()
    worker = spawn(
        "worker",
        [str(BIN / "rq"), "worker", "--worker-class", "sse_tasks.rq.Worker", "--url", env["RQ_REDIS_URL"]],
        env=env,
        cwd=ROOT,
    )
    server = spawn(
        "server",
        [str(BIN / "sse-tasks"), "serve", "--app", "examples.rq_app:hub", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        return f"--- worker:\n{worker.text()[-3000:]}\n--- server:\n{server.text()[-3000:]}"

    try:
        wait_until(lambda: "Listening on" in worker.text(), "the worker listens", 60, details=logs)
        wait_until(lambda: answers(url + "/tasks"), "GET /tasks answered 200", 60, details=logs)
        yield url, env
    finally:
        stop_all([server, worker])


def _follow(url: str, task_id: str) -> list[TaskState]:
    with Client(url) as client:
        return [task.state for task in client.follow(task_id) if hasattr(task, "state")]


def test_post_and_rqs_own_enqueue_are_followed_to_succeeded(example: tuple[str, dict[str, str]]) -> None:
    url, env = example
    answer = httpx.post(
        f"{url}/tasks", json={"name": "count", "params": {"n": 3, "interval": 0.05}}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    states = _follow(url, answer.json()["id"])
    assert states[-1] == TaskState.SUCCEEDED, states
    with Client(url) as client:
        done = client.get(answer.json()["id"])
    assert done.result == {"count": 3} and done.message == "step 3 of 3"

    code = "from examples.rq_app import queue, count; print(queue.enqueue(count, n=2, interval=0.05).id)"
    sent = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id = sent.stdout.strip()
    with Client(url) as client:
        wait_until(lambda: _known(client, job_id), "the worker stored the enqueued job", 30)
    states = _follow(url, job_id)
    assert states[-1] == TaskState.SUCCEEDED, states
    with Client(url) as client:
        assert client.get(job_id).result == {"count": 2}


def _known(client: Client, task_id: str) -> bool:
    try:
        client.get(task_id)
    except Exception:
        return False
    return True


def test_generate_fail_sleep_and_a_cancelled_count_through_watch_and_curl(
    example: tuple[str, dict[str, str]],
) -> None:
    check_demo_tasks(example[0], lambda: "")


def test_the_demo_page_runs_count_and_generate(example: tuple[str, dict[str, str]], page: Any) -> None:
    """The demo page works unchanged against RQ: both tasks run on its worker."""
    from _browser import check_demo_page

    check_demo_page(page, example[0], 30.0)
