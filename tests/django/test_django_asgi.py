"""``sse_tasks.django.asgi``: the hub under a prefix beside Django, on a real uvicorn, and
task functions on the ORM (a migrated SQLite file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import LiveServer

from sse_tasks import TaskContext, TaskHub

TIMEOUT = 30.0


def _app(hub: TaskHub, prefix: str = "/jobs") -> Any:
    import sse_tasks.django

    return sse_tasks.django.asgi(hub, prefix=prefix)


def _follow(url: str, cookies: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The snapshots of one task's stream, to its end."""
    import json

    snapshots = []
    with httpx.stream("GET", url, cookies=cookies, timeout=TIMEOUT) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if "state" in data:
                    snapshots.append(data)
    return snapshots


def test_hub_under_the_prefix_django_for_the_rest(
    django_db: Path, live_server: Callable[..., LiveServer]
) -> None:
    hub = TaskHub("memory://", shutdown_grace=1.0)

    @hub.task
    def hello(name: str) -> str:
        return f"Hello {name}~"

    server = live_server(hub, _app(hub))
    created = httpx.post(f"{server.url}/jobs/tasks", json={"name": "hello", "params": {"name": "Ithome"}})
    assert created.status_code == 202, created.text
    task = created.json()
    assert task["links"]["events"] == f"/jobs/tasks/{task['id']}/events"
    assert created.headers["location"].endswith(f"/jobs/tasks/{task['id']}")
    snapshots = _follow(server.url + task["links"]["events"])
    assert snapshots[-1]["state"] == "succeeded" and snapshots[-1]["result"] == "Hello Ithome~"
    assert httpx.get(f"{server.url}/jobs/sse-tasks.js").headers["content-type"].startswith("text/javascript")

    login = httpx.get(f"{server.url}/accounts/login/")  # Django's own view
    assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 302 and page.headers["location"].startswith("/accounts/login/")
    assert httpx.get(f"{server.url}/tasks").status_code == 404  # the hub is only under /jobs
    assert httpx.get(f"{server.url}/jobsx/tasks").status_code == 404


def test_links_keep_the_servers_root_path(django_db: Path, live_server: Callable[..., LiveServer]) -> None:
    hub = TaskHub("memory://", shutdown_grace=1.0)

    @hub.task
    def nothing() -> None:
        return None

    server = live_server(hub, _app(hub, "/jobs/"), root_path="/site")
    created = httpx.post(f"{server.url}/jobs/tasks", json={"name": "nothing"})
    assert created.status_code == 202, created.text
    assert created.json()["links"]["self"] == f"/site/jobs/tasks/{created.json()['id']}"


def test_the_lifespan_runs_the_hub(django_db: Path, live_server: Callable[..., LiveServer]) -> None:
    hub = TaskHub("memory://", shutdown_grace=1.0)
    app = _app(hub)
    server = live_server(hub, app)
    assert not hub.closing
    assert httpx.get(f"{server.url}/jobs/tasks").json()["tasks"] == []
    server.server.should_exit = True
    server.thread.join(TIMEOUT)
    assert not server.thread.is_alive()
    assert hub.closing  # left on the lifespan's shutdown


def test_a_bad_prefix_is_refused(django_db: Path) -> None:
    for prefix in ("", "/", "jobs", "/a//b"):
        with pytest.raises(ValueError):
            _app(TaskHub("memory://"), prefix)


def test_sync_and_async_tasks_on_the_orm(django_db: Path, live_server: Callable[..., LiveServer]) -> None:
    from django.db import connections as django_connections
    from reports.models import Report

    import sse_tasks.django

    hub = TaskHub("memory://", shutdown_grace=1.0)
    connections: list[Any] = []

    @sse_tasks.django.task(hub)
    def store(rows: int, ctx: TaskContext) -> dict[str, int]:
        report = Report.objects.create(task_id=ctx.task_id, rows=rows)
        ctx.progress(1.0, "stored")
        connections.append(django_connections["default"])  # this worker thread's own
        return {"report": report.pk}

    @sse_tasks.django.task(hub, name="astore")
    async def store_async(rows: int, ctx: TaskContext) -> dict[str, int]:
        report = await Report.objects.acreate(task_id=ctx.task_id, rows=rows)
        return {"report": report.pk, "count": await Report.objects.filter(pk=report.pk).acount()}

    server = live_server(hub, _app(hub))
    for name in ("store", "astore"):
        created = httpx.post(f"{server.url}/jobs/tasks", json={"name": name, "params": {"rows": 7}})
        assert created.status_code == 202, created.text
        final = _follow(server.url + created.json()["links"]["events"])[-1]
        assert final["state"] == "succeeded", final
        report = Report.objects.get(pk=final["result"]["report"])
        assert (report.task_id, report.rows) == (created.json()["id"], 7)
    assert len(connections) == 1
    # Closed after the run (CONN_MAX_AGE 0), as Django closes a request's: no connection
    # is left open in the hub's worker thread.
    assert connections[0].connection is None
    with pytest.raises(httpx.HTTPError):  # params are checked against the wrapped signature
        httpx.post(
            f"{server.url}/jobs/tasks", json={"name": "store", "params": {"rows": "x"}}
        ).raise_for_status()


@pytest.mark.anyio
async def test_a_hub_that_cannot_start_fails_the_servers_startup(django_db: Path) -> None:
    from sse_tasks import MemoryBroker

    class Unreachable(MemoryBroker):
        async def start(self, observer: Any) -> None:
            raise ConnectionError("no broker here")

    app = _app(TaskHub(Unreachable()))
    incoming = [{"type": "lifespan.startup"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "no broker here" in sent[0]["message"]
