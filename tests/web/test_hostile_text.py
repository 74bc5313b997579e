"""Text no client or task can use to break an answer: lone surrogates, odd numbers, odd digits.

Every test runs with orjson and with the stdlib JSON, and on both brokers where a hub is used
(the codec itself: tests/core/test_codec.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _support import (
    JSON_BACKENDS,
    HubFactory,
    LiveServer,
    ServerFactory,
    collect,
    sse_events,
    task_events,
    use_json,
)

from sse_tasks import TaskContext, TaskHub

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


@pytest.fixture(params=JSON_BACKENDS, autouse=True)
def json_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    use_json(request.param, monkeypatch)
    return str(request.param)


# -- requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"name": "fail", "params": {"message": "\\ud800"}}', 422, "invalid_request"),
        (b'{"name": "fail", "params": {"message": "x\\udc00"}}', 422, "invalid_request"),
        (b'{"name": "fail", "params": {"\\ud800": 1}}', 422, "invalid_request"),
        (b'{"name": "\\ud800"}', 422, "invalid_request"),
        (b'{"name": "fail", "params": {"message": "\xed\xa0\x80"}}', 400, "bad_request"),
        (b'{"name": "sleep", "params": {"seconds": 1e400}}', 400, "bad_request"),
        (b'{"name": "sleep", "params": {"seconds": -1e999}}', 400, "bad_request"),
    ],
)
async def test_unencodable_bodies_are_refused_and_create_nothing(
    client: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    response = await client.post("/tasks", content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    listed = await client.get("/tasks")
    assert listed.status_code == 200
    assert listed.json()["tasks"] == []


@pytest.mark.parametrize("value", ["²", "١٢", "٣", "1_0", " 5", "+5", "-1", "0x10", "1e2", "9" * 400])
async def test_limit_accepts_ascii_digits_only(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/tasks", params={"limit": value})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 40, "-1", "1.0"])
async def test_odd_content_length_is_a_bad_request(running_hub: TaskHub, value: str) -> None:

    app = running_hub.app
    sent: list[dict[str, Any]] = []
    headers = [(b"content-type", b"application/json"), (b"content-length", value.encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/tasks",
        "raw_path": b"/tasks",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"name": "fail"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "bad_request"


# -- what a task produces --------------------------------------------------------------


def _register_hostile_tasks(hub: TaskHub) -> None:
    @hub.task
    async def raises_surrogate(ctx: TaskContext) -> None:
        raise RuntimeError("bad \ud800 text")

    @hub.task
    async def reports_surrogate(ctx: TaskContext) -> str:
        ctx.progress(0.5, "half \udfff way")
        return "done"

    @hub.task
    def reports_surrogate_in_thread(ctx: TaskContext) -> str:
        ctx.progress(0.5, "\udc00")
        return "done"

    @hub.task
    async def returns_surrogate(ctx: TaskContext) -> dict[str, str]:
        return {"text": "\ud800"}

    @hub.task
    async def returns_nan(ctx: TaskContext) -> float:
        return float("nan")

    weird = type("WeirdError", (Exception,), {"__str__": lambda self: 1 / 0})

    @hub.task
    async def raises_weird(ctx: TaskContext) -> None:
        raise weird()


@pytest.fixture
def hostile_server(make_hub: HubFactory, live_server: ServerFactory) -> LiveServer:
    hub = make_hub(progress_interval=0)
    _register_hostile_tasks(hub)
    return live_server(hub)


@pytest.mark.parametrize(
    ("name", "state", "check"),
    [
        ("raises_surrogate", "failed", lambda t: t["error"]["message"] == "bad \ufffd text"),
        ("reports_surrogate", "succeeded", lambda t: t["message"] == "half \ufffd way"),
        ("reports_surrogate_in_thread", "succeeded", lambda t: t["message"] == "\ufffd"),
        ("returns_surrogate", "failed", lambda t: t["error"]["type"] == "ValueError" and t["result"] is None),
        ("returns_nan", "failed", lambda t: t["error"]["type"] == "ValueError"),
        ("raises_weird", "failed", lambda t: "could not be read" in t["error"]["message"]),
    ],
)
async def test_text_a_task_produces_never_breaks_a_snapshot(
    hostile_server: LiveServer, name: str, state: str, check: Any
) -> None:
    async with httpx.AsyncClient(base_url=hostile_server.url, timeout=30) as http:
        async with http.stream("GET", "/events") as watching:
            assert watching.status_code == 200
            submitted = await http.post("/tasks", json={"name": name})
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["id"]
            # The global stream carries the task's final event and stays open for the next one.
            final: dict[str, Any] | None = None
            stream = sse_events(watching)
            async for event in stream:
                if event.event and event.event.startswith("task.") and event.json()["id"] == task_id:
                    if event.event == f"task.{state}":
                        final = event.json()
                        break
            assert final is not None and check(final), final
            other = await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
            other_id = other.json()["id"]
            async for event in stream:
                if event.event == "task.succeeded" and event.json()["id"] == other_id:
                    break
        detail = await http.get(f"/tasks/{task_id}")
        assert detail.status_code == 200 and detail.json()["state"] == state
        assert check(detail.json())
        listed = await http.get("/tasks")
        assert listed.status_code == 200
        assert task_id in [t["id"] for t in listed.json()["tasks"]]
        response, events = await collect(http, f"/tasks/{task_id}/events", headers={"Last-Event-ID": "bogus"})
        assert response.status_code == 200
        assert [e.event for e in events if e.event == "reset"] == ["reset"]
        assert task_events(events)[-1].json()["state"] == state
