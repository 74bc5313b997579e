"""The Huey example run as its two commands (``docs/engines.md``, "Huey")::

    huey_consumer examples.huey_app.huey
    sse-tasks serve --app examples.huey_app:hub

from the repository root, with ``SSE_TASKS_BROKER`` pointing at database 0 of the
session's redis-server and ``HUEY_REDIS_URL`` unset (the example puts Huey's queue on
database 1 by itself). A ``count`` posted and followed with the Python client, and one
enqueued with Huey's own API from another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import ROOT, answers, check_demo_tasks, free_port, redis_db, spawn, stop_all, wait_until

pytest.importorskip("huey", reason="huey is not installed (pip install -e '.[test]')")
pytest.importorskip("redis", reason="the redis client is not installed (pip install -e '.[test]')")
# One worker and server for the module's tests: all on one test process.
pytestmark = pytest.mark.xdist_group("huey_example")

BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0


@dataclass
class Example:
    url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def example(redis_url: str) -> Iterator[Example]:
    import redis

    for tool in ("huey_consumer", "sse-tasks"):
        if not (BIN / tool).exists():
            pytest.skip(f"{BIN / tool} is not installed (pip install -e '.[test]')")
    hub_url, huey_url = redis_db(redis_url, 0), redis_db(redis_url, 1)
    clients = [redis.Redis.from_url(hub_url), redis.Redis.from_url(huey_url)]
    for client in clients:
        client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "HUEY_"))}
    env["SSE_TASKS_BROKER"] = hub_url  # and no HUEY_REDIS_URL: the example's default
    port = free_port()
    graceful = {"env": env, "cwd": ROOT, "stop_signal": signal.SIGINT}  # for huey_consumer and uvicorn
    consumer = spawn("consumer", [str(BIN / "huey_consumer"), "examples.huey_app.huey"], **graceful)
    server = spawn(
        "server",
        [str(BIN / "sse-tasks"), "serve", "--app", "examples.huey_app:hub", "--port", str(port)],
        **graceful,
    )
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        return "\n".join(f"--- {p.what}:\n{p.text()[-3000:]}" for p in (consumer, server))

    try:
        wait_until(
            lambda: "Huey consumer started" in consumer.text(), "the consumer", READY_TIMEOUT, details=logs
        )
        wait_until(lambda: answers(url + "/tasks"), "GET /tasks answered 200", READY_TIMEOUT, details=logs)
        yield Example(url, env)
    finally:
        stop_all([server, consumer])
        for client in clients:
            client.flushdb()
            client.close()


def test_a_posted_count_is_followed_to_its_result(example: Example) -> None:
    from sse_tasks import Client

    with Client(example.url, timeout=10) as client:
        task = client.submit("count", n=3, interval=0.05)
        snapshots = list(client.follow(task.id))
        assert snapshots[-1].state == "succeeded", snapshots[-1]
        assert snapshots[-1].result == {"count": 3}
        progress = [s.progress for s in snapshots if s.progress is not None]
        assert progress == sorted(progress)


def test_a_count_enqueued_with_hueys_own_api_from_another_process(example: Example) -> None:
    from sse_tasks import Client

    code = (
        "from examples.huey_app import count, huey\n"
        "task = count.s(n=2, interval=0.05)\n"
        "huey.enqueue(task)\n"
        "print(task.id)\n"
    )
    sent = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=example.env, capture_output=True, text=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    with Client(example.url, timeout=10) as client:
        assert client.get(task_id).name == "count"  # stored by the enqueuing process itself
        final = list(client.follow(task_id))[-1]
        assert final.state == "succeeded" and final.result == {"count": 2}


def test_generate_fail_sleep_and_a_cancelled_count_through_watch_and_curl(example: Example) -> None:
    check_demo_tasks(example.url, lambda: "")


def test_the_demo_page_runs_count_and_generate(example: Example, page: Any) -> None:
    """The demo page works unchanged against Huey: both tasks run on its worker."""
    from _browser import check_demo_page

    check_demo_page(page, example.url, 30.0)
