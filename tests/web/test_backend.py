"""The web layer asks the runner only what ``TaskBackend`` (web/backend.py) declares.

Read from the source (every ``….runner.<member>`` in the web package is a member of the
protocol, and the web package never imports the runner), and shown live: the web layer
served by a real uvicorn from a fake that implements only the protocol.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from _fake_backend import DRIVERS, FakeBackend
from _support import parse_source, serve_in_thread, sse_events
from starlette.applications import Starlette

from sse_tasks import TaskState
from sse_tasks._runner import Runner
from sse_tasks.web.backend import TaskBackend
from sse_tasks.web.service import WebService
from sse_tasks.web.settings import WebSettings

pytestmark = pytest.mark.anyio

WEB = Path(__file__).parents[2] / "sse_tasks" / "web"
MEMBERS = frozenset(name for name in vars(TaskBackend) if not name.startswith("_"))


def _runner_members_used() -> dict[str, set[str]]:
    """``member -> modules`` for every ``runner.<member>`` / ``<x>.runner.<member>`` in web/."""
    used: dict[str, set[str]] = {}
    for path in sorted(WEB.glob("*.py")):
        for node in ast.walk(parse_source(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            named_runner = (isinstance(owner, ast.Name) and owner.id == "runner") or (
                isinstance(owner, ast.Attribute) and owner.attr == "runner"
            )
            if named_runner:
                used.setdefault(node.attr, set()).add(path.name)
    return used


def test_the_web_package_uses_exactly_the_protocols_members() -> None:
    used = _runner_members_used()
    beyond = {member: modules for member, modules in used.items() if member not in MEMBERS}
    assert beyond == {}, "the web layer reaches past TaskBackend"
    assert set(used) == MEMBERS, f"members nothing in web/ uses (drop them): {MEMBERS - set(used)}"
    assert "shutdown" not in MEMBERS and "submit_json" in MEMBERS and "log" in MEMBERS


def test_the_web_package_never_imports_the_runner() -> None:
    for path in sorted(WEB.glob("*.py")):
        for node in ast.walk(parse_source(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                assert "_runner" not in target, f"{path.name} imports {target}"
                assert "_hub" not in target, f"{path.name} imports {target}"


def test_the_runner_and_the_fake_have_every_member_and_the_fake_no_other() -> None:
    assert MEMBERS <= set(dir(Runner)) | {"registry", "stats"}  # instance attributes of a Runner
    public = {name for name in dir(FakeBackend) if not name.startswith("_")}
    assert public == MEMBERS | DRIVERS


@contextlib.asynccontextmanager
async def _monitored(service: WebService) -> AsyncIterator[None]:
    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        yield
        group.cancel_scope.cancel()


async def test_the_web_layer_serves_a_task_and_its_stream_from_the_protocol_alone() -> None:
    backend = FakeBackend()
    task = backend.publish(backend.add("count"), TaskState.RUNNING, progress=0.5)
    service = WebService(backend, WebSettings(heartbeat=0))
    app: Starlette = service.app(lambda app: _monitored(service))
    with serve_in_thread(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            snapshot = await http.get(f"/tasks/{task.id}")
            assert snapshot.status_code == 200, snapshot.text
            assert snapshot.json()["state"] == "running" and snapshot.json()["progress"] == 0.5
            missing = await http.get("/tasks/nope")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

            seen: list[tuple[str | None, str]] = []
            with anyio.fail_after(10):
                async with http.stream("GET", f"/tasks/{task.id}/events") as response:
                    assert response.status_code == 200
                    async for event in sse_events(response):
                        if event.event is None:
                            continue  # the retry frame
                        seen.append((event.event, event.json()["state"]))
                        if len(seen) == 1:  # live now: finish it on the server's loop
                            server.call(_finish(backend, task.id))
    assert seen == [("task.running", "running"), ("task.succeeded", "succeeded")]
    assert backend.stats.events_delivered == 2  # the snapshot, then the terminal event


async def _finish(backend: FakeBackend, task_id: str) -> None:
    backend.publish(backend.tasks[task_id], TaskState.SUCCEEDED, result=3)
