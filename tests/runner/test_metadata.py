"""A task's metadata (ctx.metadata / set_metadata) and its tags, on every broker."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from _support import HubFactory, finished

from sse_tasks import InvalidRequest, TaskContext, TaskState

pytestmark = pytest.mark.anyio


async def test_metadata_merges_replaces_and_ends_on_the_final_snapshot(make_hub: HubFactory) -> None:
    hub = make_hub()
    seen: list[dict[str, Any]] = []

    @hub.task
    def steps(ctx: TaskContext) -> None:  # a worker thread
        seen.append(ctx.metadata(done=1, total=3))
        seen.append(ctx.metadata(done=2))
        seen.append(ctx.metadata(total=None))  # None removes the key
        seen.append(ctx.metadata())  # reads
        seen.append(ctx.set_metadata({"rows": [1, 2], "name": "x"}))  # replaces

    async with hub:
        task = await hub.submit(steps)
        assert task.metadata == {} and task.tags == ()
        final = await finished(hub, task.id)
        stored = await hub.get(task.id)
    assert final.state is TaskState.SUCCEEDED
    assert seen[:4] == [{"done": 1, "total": 3}, {"done": 2, "total": 3}, {"done": 2}, {"done": 2}]
    assert seen[4] == final.metadata
    assert final.metadata == stored.metadata == {"rows": [1, 2], "name": "x"}
    assert stored.to_dict()["metadata"] == {"rows": [1, 2], "name": "x"}


async def test_each_change_is_streamed_as_a_progress_event(make_hub: HubFactory) -> None:
    hub = make_hub(progress_interval=0)
    go_on = anyio.Event()

    @hub.task
    async def waits(ctx: TaskContext) -> None:
        ctx.metadata(step=1)
        await go_on.wait()
        ctx.metadata(step=2)
        ctx.progress(0.5)

    async with hub:
        log = hub.broker.log
        start = log.head
        task = await hub.submit(waits)
        with anyio.fail_after(10):  # the first change is published while the task waits
            while not any(
                e.type == "task.progress" and e.task.metadata == {"step": 1} for e in log.read(start)
            ):
                await log.wait(log.head)
        go_on.set()
        final = await finished(hub, task.id)
        events = [e for e in log.read(start) if e.task.id == task.id]
    assert final.metadata == {"step": 2} and final.progress == 1.0
    assert [e.task.metadata for e in events if e.type == "task.progress"][-1] == {"step": 2}
    assert b'"metadata":{"step":1}' in next(e for e in events if e.type == "task.progress").frame()


async def test_hostile_metadata_is_refused_with_a_value_error(make_hub: HubFactory) -> None:
    hub = make_hub(max_metadata_bytes=256)
    refused: list[str] = []
    deep: Any = []
    for _ in range(300):
        deep = [deep]

    @hub.task
    def hostile(ctx: TaskContext) -> dict[str, Any]:
        ctx.metadata(html="<script>alert(1)</script>", quote='"\n\r\x00')
        for bad in (
            {"nan": math.nan},
            {"inf": math.inf},
            {"surrogate": "\ud800"},
            {"huge": "x" * 300},
            {"deep": deep},
            {"set": {1, 2}},
            {"bytes": b"x"},
        ):
            try:
                ctx.metadata(**bad)
            except ValueError as exc:
                refused.append(type(exc).__name__)
        for not_object in ([1], "text", {1: "int key"}):
            try:
                ctx.set_metadata(not_object)  # type: ignore[arg-type]
            except ValueError:
                refused.append("object")
        return ctx.metadata()

    async with hub:
        final = await finished(hub, (await hub.submit(hostile)).id)
    assert refused == ["ValueError"] * 7 + ["object"] * 3
    kept = {"html": "<script>alert(1)</script>", "quote": '"\n\r\x00'}
    assert final.state is TaskState.SUCCEEDED, final.error
    assert final.result == kept and final.metadata == kept


async def test_metadata_past_the_bound_fails_a_task_that_does_not_catch_it(make_hub: HubFactory) -> None:
    hub = make_hub(max_metadata_bytes=64)

    @hub.task
    async def too_big(ctx: TaskContext) -> None:
        ctx.metadata(ok=1)
        ctx.metadata(blob="y" * 100)

    async with hub:
        final = await finished(hub, (await hub.submit(too_big)).id)
    assert final.state is TaskState.FAILED and final.metadata == {"ok": 1}
    assert final.error is not None and final.error["type"] == "ValueError"
    assert "more than the 64 allowed" in final.error["message"]


async def test_tags_are_checked_and_kept(make_hub: HubFactory) -> None:
    hub = make_hub()
    async with hub:
        task = await hub.submit("sleep", seconds=0, tags=["user:42", "a.b@c/d-e_f", "user:42"])
        assert task.tags == ("user:42", "a.b@c/d-e_f")  # duplicates dropped, order kept
        assert (await finished(hub, task.id)).tags == task.tags
        many = [f"t{i}" for i in range(17)]
        for bad in (["has space"], [""], ["x" * 65], ["<script>"], ["\ud800"], [1], many):
            with pytest.raises(InvalidRequest):
                await hub.submit("sleep", seconds=0, tags=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await hub.submit_json("sleep", {}, tags="user:42")
        assert [t.id for t in await hub.list_tasks(tags=["user:42"])] == [task.id]
        assert await hub.list_tasks(tags=["user:42", "other"]) == []
