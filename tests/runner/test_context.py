"""A task function gets a TaskContext only where it asks for one; current_task() anywhere inside."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _support import HubFactory, finished

from sse_tasks import TaskContext, current_task

pytestmark = pytest.mark.anyio


async def test_the_starting_examples_function_is_tracked_unchanged(make_hub: HubFactory) -> None:
    printed: list[str] = []

    def print_msg(name: str) -> None:
        time.sleep(0.05)
        printed.append(f"Hello {name}~")

    hub = make_hub()
    async with hub:
        tracked = await hub.background(print_msg, "Ithome")
        assert tracked.task.state.value == "queued"
        await tracked()  # what Starlette does after the response
        final = await finished(hub, tracked.id)
        submitted = await hub.submit(print_msg, name="again")
        again = await finished(hub, submitted.id)
    assert final.state.value == "succeeded" and final.result is None
    assert again.state.value == "succeeded"
    assert printed == ["Hello Ithome~", "Hello again~"]


async def test_the_context_goes_to_the_parameter_annotated_for_it(make_hub: HubFactory) -> None:
    hub = make_hub(progress_interval=0)

    @hub.task
    async def anywhere(n: int, progress_report: TaskContext, *, label: str = "x") -> dict[str, Any]:
        progress_report.progress(0.5, label)
        return {"n": n, "name": progress_report.name}

    assert "progress_report" not in {p.name for p in hub.registry["anywhere"].params}
    async with hub:
        task = await hub.submit_json("anywhere", {"n": 3, "label": "half"})
        final = await finished(hub, task.id)
    assert final.result == {"n": 3, "name": "anywhere"}
    assert final.message == "half"


async def test_current_task_inside_async_and_sync_tasks_and_their_threads(make_hub: HubFactory) -> None:
    hub = make_hub()
    seen: dict[str, str] = {}

    @hub.task
    async def asynchronous() -> None:
        seen["async"] = current_task().task_id

    @hub.task
    def synchronous() -> None:
        seen["sync"] = current_task().task_id
        current_task().progress(0.5, "from the worker thread")

    async with hub:
        a = await hub.submit("asynchronous")
        s = await hub.submit("synchronous")
        assert (await finished(hub, a.id)).state.value == "succeeded"
        final = await finished(hub, s.id)
    assert final.state.value == "succeeded", final.error
    assert seen == {"async": a.id, "sync": s.id}


def test_current_task_outside_a_task_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="outside a running task"):
        current_task()
    failures: list[BaseException] = []

    def in_thread() -> None:
        try:
            current_task()
        except RuntimeError as exc:
            failures.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert len(failures) == 1


async def test_an_unannotated_ctx_first_still_works_with_a_warning(make_hub: HubFactory) -> None:
    hub = make_hub()

    def legacy(ctx, n: int = 1):  # type: ignore[no-untyped-def]
        ctx.progress(1.0, "legacy")
        return n

    with pytest.warns(DeprecationWarning, match="annotate its first parameter"):
        hub.register(legacy)
    async with hub:
        task = await hub.submit("legacy", n=2)
        final = await finished(hub, task.id)
    assert final.result == 2
