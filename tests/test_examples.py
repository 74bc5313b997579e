"""The examples work as their docstrings say, on a real server (links respect the mount)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import httpx
import pytest
from _support import collect, serve_in_thread, task_events

pytestmark = pytest.mark.anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load(name: str) -> object:
    return importlib.import_module(f"examples.{name}")


async def test_background_tasks_example_is_observable(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("background_tasks")
    monkeypatch.setattr(module, "GREETING_SECONDS", 0.2)
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.get("/")
            assert response.status_code == 200
            body = response.json()
            assert body["msg"] == "Hello World"
            task = body["task"]
            assert task["links"]["events"] == f"/jobs/tasks/{task['id']}/events"
            _, events = await collect(http, task["links"]["events"])
    changes = task_events(events)
    assert changes[-1].event == "task.succeeded"
    assert changes[-1].json()["result"] == "Hello Ithome~"
    assert changes[-1].json()["links"]["self"] == f"/jobs/tasks/{task['id']}"
    assert any(e.event == "task.progress" for e in changes)


async def test_starlette_mount_example() -> None:
    module = load("starlette_mount")
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/api/imports", params={"rows": 3})
            assert response.status_code == 202
            task = response.json()
            assert response.headers["location"] == f"/api/tasks/{task['id']}"
            _, events = await collect(http, task["links"]["events"])
            listing = (await http.get("/api/tasks")).json()
    changes = task_events(events)
    assert changes[-1].event == "task.succeeded"
    assert changes[-1].json()["result"] == {"imported": 3}
    assert all(e.json()["links"]["events"].startswith("/api/tasks/") for e in changes)
    assert listing["tasks"][0]["links"]["self"] == f"/api/tasks/{task['id']}"


async def test_fastapi_example() -> None:
    module = load("fastapi_app")
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/reports", params={"rows": 3})
            assert response.status_code == 202
            task = response.json()
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            bad = await http.post("/tasks", json={"name": "report", "params": {"rows": "x"}})
    assert task_events(events)[-1].json()["result"] == {"rows": 3}
    assert bad.status_code == 422
