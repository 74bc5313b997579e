"""The arq example run as its two commands, from the repository root::

    arq examples.arq_app.WorkerSettings
    sse-tasks serve --app examples.arq_app:hub

with ``SSE_TASKS_BROKER`` set and ``ARQ_REDIS_URL`` unset (the example puts arq on the
next database by itself). A ``count`` posted to the server, and one enqueued with arq's
own ``enqueue_job`` from another process, are followed to ``succeeded``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ROOT, answers, check_demo_tasks, free_port, spawn, stop_all, wait_until

pytest.importorskip("arq", reason="arq is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("arq_example")

BIN = Path(sys.executable).parent
ENQUEUE = (
    "import asyncio, sys\n"
    "from arq.connections import RedisSettings, create_pool\n"
    "async def main():\n"
    "    pool = await create_pool(RedisSettings.from_dsn(sys.argv[1]))\n"
    "    print((await pool.enqueue_job('count', n=3, interval=0.05)).job_id)\n"
    "asyncio.run(main())\n"
)


@dataclass
class Example:
    url: str
    arq_url: str
    env: dict[str, str]
    logs: Callable[[], str]


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[Example]:
    """The two commands, with ``ARQ_REDIS_URL`` unset."""
    import redis

    base = redis_url.partition("?")[0].rsplit("/", 1)[0]
    hub_url, arq_url = f"{base}/8", f"{base}/9"  # the example's default: the next database
    for url in (hub_url, arq_url):
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    env = {**os.environ, "SSE_TASKS_BROKER": hub_url, "PYTHONPATH": str(ROOT)}
    env.pop("ARQ_REDIS_URL", None)
    port = free_port()
    started = [
        spawn("worker", [str(BIN / "arq"), "examples.arq_app.WorkerSettings"], env=env, cwd=ROOT),
        spawn(
            "server",
            [str(BIN / "sse-tasks"), "serve", "--app", "examples.arq_app:hub", "--port", str(port)],
            env=env,
            cwd=ROOT,
        ),
    ]
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        return "\n".join(p.text()[-2000:] for p in started)

    try:
        wait_until(lambda: answers(url + "/tasks"), "GET /tasks answered 200", 60, details=logs)
        yield Example(url, arq_url, env, logs)
    finally:
        stop_all(started)


def test_a_posted_count_and_one_enqueued_with_arqs_own_api_succeed(example: Example) -> None:
    with httpx.Client(base_url=example.url, timeout=10) as http:
        posted = http.post("/tasks", json={"name": "count", "params": {"n": 5, "interval": 0.05}})
        assert posted.status_code == 202, posted.text
        enqueued = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", ENQUEUE, example.arq_url],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=example.env,
        ).stdout.split()[-1]

        def done(task_id: str) -> Any:
            answer = http.get(f"/tasks/{task_id}")
            return answer.status_code == 200 and answer.json()["state"] == "succeeded" and answer.json()

        for task_id, n in ((posted.json()["id"], 5), (enqueued, 3)):
            final = wait_until(lambda t=task_id: done(t), f"{task_id} succeeds", 30, details=example.logs)
            assert final["result"] == {"count": n} and final["name"] == "count"


def test_generate_fail_sleep_and_a_cancelled_count_through_watch_and_curl(example: Example) -> None:
    check_demo_tasks(example.url, example.logs)


def test_the_demo_page_runs_count_and_generate(example: Example, page: Any) -> None:
    """The demo page works unchanged against arq: both tasks run on its worker."""
    from _browser import check_demo_page

    check_demo_page(page, example.url, 30.0)
