"""What the engine contract cannot say about Dramatiq: retries of the Retries middleware,
the middleware's place in a worker, and the hub's messages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import pytest
from _engines import Engine, group
from test_engine_contract import post, served, wait_for_file

pytest.importorskip("dramatiq")
pytestmark = [pytest.mark.anyio, group("dramatiq")]  # shares the dramatiq workers


@pytest.fixture
def dramatiq_engine(
    redis_url: str, redis_db: int, dramatiq_worker: Any, dramatiq_tasks: ModuleType
) -> Engine:
    from sse_tasks.dramatiq import DramatiqEngine

    url = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"

    def enqueue(name: str, **params: Any) -> str:
        return str(dramatiq_tasks.actors[name].send(**params).message_id)

    def no_dying() -> Any:
        raise NotImplementedError

    return Engine("dramatiq", url, lambda reachable: DramatiqEngine(dramatiq_tasks.broker), enqueue, no_dying)


async def test_a_retry_is_queued_again_then_runs_to_its_end(
    dramatiq_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    async with served(dramatiq_engine, live_server) as (http, events):
        task_id = await post(http, "flaky", marker=str(marker), failures=2)
        final = await events.end(task_id)
        assert events.types(task_id) == [
            "queued",
            "running",
            "queued",
            "running",
            "queued",
            "running",
            "succeeded",
        ]
        requeued = [e.json()["message"] for e in events.by_task[task_id] if e.event == "task.queued"][1:]
        assert requeued == ["retry 1 of 2", "retry 2 of 2"]
        assert final.json()["result"] == 3

        exhausted = await post(http, "flaky", marker=str(tmp_path / "again"), failures=5)
        final = await events.end(exhausted)
        assert events.types(exhausted)[-1] == "failed"
        assert events.types(exhausted).count("running") == 3  # the first attempt and two retries
        assert final.json()["error"] == {"type": "RuntimeError", "message": "attempt 3"}


async def test_delete_aborts_a_running_task_that_never_checks(
    dramatiq_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    """With dramatiq-abort's Abortable middleware on the broker, the engine aborts the message."""
    marker = tmp_path / "stopped"
    async with served(dramatiq_engine, live_server) as (http, events):
        task_id = await post(http, "oblivious", marker=str(marker))
        await events.state(task_id, "task.running")
        assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
        await events.end(task_id)
        assert events.types(task_id) == ["queued", "running", "cancelled"]
        await anyio.to_thread.run_sync(wait_for_file, marker)  # interrupted: it never checks
        after = await post(http, "add", a=1)
        assert (await events.end(after)).json()["result"] == 2  # the worker lives on


async def test_an_abort_that_comes_after_the_body_saw_its_cancel_is_dropped(
    dramatiq_engine: Engine, live_server: Any, tmp_path: Path
) -> None:
    """``DELETE`` stores ``cancelled`` and sends dramatiq-abort's ``Abort``: when the task's
    ``check()`` sees the cancel first, a late ``Abort`` raised after the body ended would
    escape Dramatiq's worker loop and kill the thread (one thread left: the next two tasks
    never run together). ``late_abort`` gets it at that moment; no revoke from the hub."""
    from sse_tasks.dramatiq import DramatiqEngine

    class NoRevoke(DramatiqEngine):
        async def revoke(self, task: Any) -> None:
            return None

    engine = replace(dramatiq_engine, make=lambda reachable: NoRevoke(dramatiq_engine.make(True).dramatiq))
    async with served(engine, live_server) as (http, events):
        task_id = await post(http, "late_abort", seconds=60)
        await events.state(task_id, "task.running")
        assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
        await events.end(task_id)
        busy = [await post(http, "stubborn", seconds=60) for _ in range(2)]
        for busy_id in busy:  # both worker threads live
            await events.state(busy_id, "task.running")
        for busy_id in busy:
            assert (await http.delete(f"/tasks/{busy_id}")).status_code == 202
            await events.end(busy_id)
    assert events.types(task_id) == ["queued", "running", "cancelled"]


def test_the_middleware_is_moved_first_in_a_worker(dramatiq_tasks: ModuleType) -> None:
    """Dramatiq calls ``after_*`` hooks in reverse: first, the middleware's run after Retries'."""
    from dramatiq.middleware import Retries

    broker, middleware = dramatiq_tasks.broker, dramatiq_tasks.middleware
    chain = broker.middleware
    assert chain.index(middleware) > next(i for i, m in enumerate(chain) if isinstance(m, Retries))
    saved = list(chain)
    try:
        for m in saved:  # as Dramatiq's emit_before does, iterating the list being changed
            m.before_worker_boot(broker, None)
        assert chain[0] is middleware and sorted(map(id, chain)) == sorted(map(id, saved))
    finally:
        chain[:] = saved


def test_the_hubs_message_carries_its_id_and_options(dramatiq_tasks: ModuleType) -> None:
    from sse_tasks.dramatiq import DramatiqEngine, connect

    assert connect(dramatiq_tasks.broker) is dramatiq_tasks.middleware  # one per broker
    names = [name for name, _ in DramatiqEngine(dramatiq_tasks.broker).registrations()]
    assert {"add", "fail", "flaky", "steps", "stubborn", "talk", "touch"} <= set(names)
    with pytest.raises(ValueError, match="no actor named 'nope'"):
        list(DramatiqEngine(dramatiq_tasks.broker, ["add", "nope"]).registrations())
    with pytest.raises(ValueError, match="Redis broker URL"):
        connect(SimpleNamespace(middleware=[]), "memory://")  # type: ignore[arg-type]
