"""What the engine contract cannot say of Huey: an enqueue is stored ``queued`` by the
enqueuing process itself, Huey's own ``revoke_by_id`` of queued work shows as ``cancelled``,
a retry (``retries=``) goes back to ``queued`` with its number, a task another
pre-execute hook cancels ends ``cancelled``, and one that raises ``SystemExit`` (which
Huey lets out of its worker thread) or an exception whose ``repr()`` fails (Huey's error
result, before its post-execute hooks) ends ``failed``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.to_thread
import pytest
from _engines import Engine, group
from test_engine_contract import WAIT, post, served, wait_for_file

from sse_tasks.engines import RemoteEngine

pytestmark = [pytest.mark.anyio, group("huey")]  # shares the huey workers


@pytest.fixture
def huey_engine(huey_app: ModuleType, redis_url: str, redis_db: int) -> Iterator[Engine]:
    from sse_tasks.huey import HueyEngine

    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"

    def make(reachable: bool) -> RemoteEngine:
        return HueyEngine(huey_app.huey)

    def nothing(*args: Any, **params: Any) -> Any:
        raise AssertionError("not used here")

    yield Engine("huey", url, make, nothing, nothing)


def enqueue(app: ModuleType, huey: Any, name: str, **params: Any) -> str:
    task = app.make_task(huey, name, params)
    huey.enqueue(task)
    return str(task.id)


async def test_an_enqueue_is_queued_at_once_without_a_consumer(
    huey_app: ModuleType, huey_engine: Engine, live_server: Any
) -> None:
    idle = huey_app.make(f"idle-{secrets.token_hex(4)}")  # a queue no consumer reads
    async with served(huey_engine, live_server) as (http, events):
        task_id = enqueue(huey_app, idle, "add", a=1)
        queued = (await events.state(task_id, "task.queued")).json()
        assert queued["name"] == "add" and queued["created_at"] and queued["started_at"] is None
        assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "queued"
    idle.flush()


async def test_hueys_own_revoke_of_waiting_work_ends_it_cancelled(
    huey_app: ModuleType, huey_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    markers = [tmp_path / "one", tmp_path / "two"]
    ran = tmp_path / "ran"
    async with served(huey_engine, live_server) as (http, events):
        busy = [await post(http, "stubborn", seconds=60, marker=str(m)) for m in markers]
        for task_id in busy:  # both consumer threads are taken
            await events.state(task_id, "task.running")
        waiting = enqueue(huey_app, huey_app.huey, "touch", marker=str(ran))
        huey_app.huey.revoke_by_id(waiting)  # Huey's own API, no hub involved
        for task_id in busy:
            assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
        final = await events.end(waiting)
        assert events.types(waiting) == ["queued", "cancelled"]
        assert final.json()["message"] == "revoked" and final.json()["started_at"] is None
        for marker in markers:
            await anyio.to_thread.run_sync(wait_for_file, marker)
    assert not ran.exists()


async def test_a_retry_goes_back_to_queued_then_succeeds(
    huey_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    async with served(huey_engine, live_server) as (http, events):
        task_id = await post(http, "flaky", marker=str(tmp_path / "flaky"))
        final = await events.end(task_id, timeout=WAIT)
        assert events.types(task_id) == ["queued", "running", "queued", "running", "succeeded"]
        retried = events.by_task[task_id][2].json()
        assert retried["message"] == "retry 1 of 1" and retried["started_at"] is None
        assert final.json()["result"] == "second attempt"


async def test_a_pre_execute_hook_that_cancels_ends_it_cancelled(
    huey_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    async with served(huey_engine, live_server) as (http, events):
        task_id = await post(http, "vetoed", marker=str(ran))
        final = await events.end(task_id)
        assert final.event == "task.cancelled"
        assert final.json()["message"] == "cancelled by a pre-execute hook"
        after = await post(http, "add", a=1)
        assert (await events.end(after)).json()["result"] == 2  # the consumer lives on
    assert not ran.exists()


async def test_a_task_that_raises_system_exit_ends_failed_and_the_consumer_goes_on(
    huey_engine: Engine, live_server: Any
) -> None:
    async with served(huey_engine, live_server) as (http, events):
        exited = await post(http, "exits", code=3)
        unreadable = await post(http, "unreadable")
        assert (await events.end(exited)).json()["error"] == {"type": "SystemExit", "message": "3"}
        unrepresentable = await post(http, "unrepresentable")
        error = (await events.end(unreadable)).json()["error"]
        assert error == {"type": "Unreadable", "message": "(the exception's message could not be read)"}
        error = (await events.end(unrepresentable)).json()["error"]
        assert error == {"type": "Unrepresentable", "message": "raised"}
        after = await post(http, "add", a=1)
        assert (await events.end(after)).json()["result"] == 2
