"""Behind a proxy's path prefix: links come from the ASGI ``root_path`` (``--root-path``, a
mount, or a trusted proxy's ``X-Forwarded-Prefix``), in JSON and in every SSE event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from _support import collect, serve_in_thread, task_events
from starlette.applications import Starlette
from starlette.routing import Mount

from sse_tasks import TaskHub
from sse_tasks.demo import register_demo_tasks
from sse_tasks.web.proxy import MAX_PREFIX, ForwardedPrefix, TrustedProxies, check_prefix

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("value", "prefix"),
    [("", ""), ("/", ""), ("/jobs", "/jobs"), ("/jobs/", "/jobs"), ("/a/b-c_d.e~:@", "/a/b-c_d.e~:@")],
)
def test_a_valid_prefix_is_normalised(value: str, prefix: str) -> None:
    assert check_prefix(value) == prefix


@pytest.mark.parametrize(
    "value",
    [
        "jobs",
        "/jobs/../admin",
        "/..",
        "//evil.example",
        "/a//b",
        "/jobs\r\nSet-Cookie: x=1",
        "/jobs\x00",
        "/jobs\x7f",
        "/jo bs",
        "/jobs?x=1",
        "/jobs#x",
        "/%2e%2e",
        "/a,b",
        "/caf\u00e9",
        "/" + "a" * MAX_PREFIX,
    ],
)
def test_an_invalid_prefix_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="path prefix") as refused:
        check_prefix(value)
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)


def test_trusted_proxies_as_uvicorn_names_them() -> None:
    one = TrustedProxies("127.0.0.1")
    assert "127.0.0.1" in one and "127.0.0.2" not in one and None not in one and "localhost" not in one
    several = TrustedProxies("10.0.0.0/8, ::1")
    assert "10.2.3.4" in several and "::1" in several and "11.0.0.1" not in several
    assert "203.0.113.9" in TrustedProxies("*")
    with pytest.raises(ValueError, match=r"'proxy\.example'"):
        TrustedProxies("127.0.0.1,proxy.example")


def make_hub() -> TaskHub:
    hub = TaskHub("memory://", shutdown_grace=0.5)
    register_demo_tasks(hub)
    return hub


@pytest.fixture
async def hub() -> AsyncIterator[TaskHub]:
    hub = make_hub()
    async with hub:
        yield hub


async def links_of(app: Any, peer: str, headers: dict[str, str], root_path: str = "") -> dict[str, Any]:
    """The links and Location of a task submitted through ``app`` from ``peer``."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        created = await client.post(
            "/tasks", json={"name": "sleep", "params": {"seconds": 0}}, headers=headers
        )
        assert created.status_code == 202
        task = created.json()
        listed = await client.get("/tasks", headers=headers)
        assert [t["links"] for t in listed.json()["tasks"] if t["id"] == task["id"]] == [task["links"]]
        servers = (await client.get("/openapi.json", headers=headers)).json()["servers"]
        return {"links": task["links"], "location": created.headers["location"], "servers": servers}


def expected(root: str, answer: dict[str, Any]) -> dict[str, Any]:
    task_id = answer["links"]["self"].rsplit("/", 1)[1]
    base = f"{root}/tasks/{task_id}"
    return {
        "links": {"self": base, "events": f"{base}/events", "output": f"{base}/output"},
        "location": base,
        "servers": [{"url": root or "/"}],
    }


async def test_a_trusted_proxys_prefix_is_the_root_path(hub: TaskHub) -> None:
    app = ForwardedPrefix(hub.app, TrustedProxies("127.0.0.1"))
    answer = await links_of(app, "127.0.0.1", {"X-Forwarded-Prefix": "/jobs/"})
    assert answer == expected("/jobs", answer)
    # It takes the place of the server's own root path (--root-path), for that request.
    answer = await links_of(app, "127.0.0.1", {"X-Forwarded-Prefix": "/jobs"}, root_path="/base")
    assert answer == expected("/jobs", answer)
    answer = await links_of(app, "127.0.0.1", {}, root_path="/base")
    assert answer == expected("/base", answer)


@pytest.mark.parametrize(
    ("peer", "value"),
    [
        ("203.0.113.7", "/jobs"),  # not a trusted proxy
        ("127.0.0.1", "//evil.example"),
        ("127.0.0.1", "/jobs/../admin"),
        ("127.0.0.1", "/" + "a" * 300),
        ("127.0.0.1", "jobs"),
    ],
)
async def test_a_prefix_from_an_untrusted_peer_or_invalid_is_ignored(
    hub: TaskHub, peer: str, value: str
) -> None:
    app = ForwardedPrefix(hub.app, TrustedProxies("127.0.0.1"))
    answer = await links_of(app, peer, {"X-Forwarded-Prefix": value})
    assert answer == expected("", answer)
    answer = await links_of(app, peer, {"X-Forwarded-Prefix": value}, root_path="/base")
    assert answer == expected("/base", answer)


async def test_a_repeated_prefix_header_is_ignored(hub: TaskHub) -> None:
    app = ForwardedPrefix(hub.app, TrustedProxies("127.0.0.1"))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        headers = [("X-Forwarded-Prefix", "/a"), ("X-Forwarded-Prefix", "/b")]
        created = await client.post(
            "/tasks", json={"name": "sleep", "params": {"seconds": 0}}, headers=headers
        )
        assert created.headers["location"].startswith("/tasks/")


async def follow_both(url: str, task_id: str, cursor: str, headers: list[dict[str, str]]) -> list[list[Any]]:
    """The snapshots of ``task_id`` on one ``/events`` stream per header set, read at once."""
    found: list[list[Any]] = [[] for _ in headers]

    async def follow(index: int, client: httpx.AsyncClient) -> None:
        def ended(event: Any) -> bool:
            return bool(event.event in ("task.succeeded", "task.failed") and event.json()["id"] == task_id)

        _, events = await collect(
            client, url, headers={**headers[index], "Last-Event-ID": cursor}, until=ended
        )
        found[index] = [e.json() for e in task_events(events) if e.json()["id"] == task_id]

    async with httpx.AsyncClient(timeout=30) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for index in range(len(headers)):
                    group.start_soon(follow, index, client)
    return found


async def test_streams_at_two_root_paths_each_get_their_links() -> None:
    """The hub encodes each event once per root path and shares it: a stream through the
    proxy's prefix and one at the server's own root path, open at once, each get theirs."""
    hub = make_hub()
    app = ForwardedPrefix(hub.app, TrustedProxies("127.0.0.1"))
    with serve_in_thread(app, hub, root_path="/base") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            cursor = (await client.get("/tasks")).json()["cursor"]
            created = await client.post(
                "/tasks", json={"name": "count", "params": {"n": 4, "interval": 0.01}}
            )
            task_id = created.json()["id"]
            per_task = []
            for headers in ({}, {"X-Forwarded-Prefix": "/jobs"}):
                _, events = await collect(client, f"/tasks/{task_id}/events", headers=headers)
                per_task.append({e.json()["links"]["events"] for e in task_events(events)})
        assert per_task == [{f"/base/tasks/{task_id}/events"}, {f"/jobs/tasks/{task_id}/events"}]
        plain, prefixed = await follow_both(
            server.url + "/events", task_id, cursor, [{}, {"X-Forwarded-Prefix": "/jobs"}]
        )
    assert [s["state"] for s in plain][-1] == "succeeded" and len(plain) == len(prefixed) >= 3
    assert {s["links"]["self"] for s in plain} == {f"/base/tasks/{task_id}"}
    assert {s["links"]["self"] for s in prefixed} == {f"/jobs/tasks/{task_id}"}


async def test_a_mounted_hub_under_a_root_path_links_under_both() -> None:
    """``app.mount("/jobs", hub.app)`` served with ``--root-path /outer``: /outer/jobs/tasks/…,
    on the stream routes too (which the hub's app routes itself)."""
    hub = make_hub()
    app = Starlette(routes=[Mount("/jobs", hub.app)], lifespan=hub.lifespan)
    with serve_in_thread(app, hub, root_path="/outer") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            created = await client.post("/jobs/tasks", json={"name": "sleep", "params": {"seconds": 0}})
            task = created.json()
            assert task["links"]["events"] == f"/outer/jobs/tasks/{task['id']}/events"
            assert created.headers["location"] == f"/outer/jobs/tasks/{task['id']}"
            # The server strips its root path: the client asks for the path the proxy forwards.
            _, events = await collect(client, f"/jobs/tasks/{task['id']}/events")
    snapshots = task_events(events)
    assert snapshots[-1].event == "task.succeeded"
    assert {e.json()["links"]["self"] for e in snapshots} == {f"/outer/jobs/tasks/{task['id']}"}
