"""Each endpoint is a named unit: called here alone, with a ``Web`` context and a request.

No app, no router, no server: an endpoint gets what it may use in its context (over a
backend implementing only the web layer's protocol) and answers, or raises the
``SSETasksError`` that the route table turns into its JSON error.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from _fake_backend import FakeBackend
from starlette.requests import Request
from starlette.responses import Response

from sse_tasks import InvalidRequest, NotFound, TaskState
from sse_tasks.web import endpoints
from sse_tasks.web.endpoints import Web
from sse_tasks.web.routes import ROUTES, Methods
from sse_tasks.web.settings import WebSettings

pytestmark = pytest.mark.anyio


def request(
    path: str, *, method: str = "GET", query: dict[str, str] | None = None, **path_params: str
) -> Request:
    """A request as a route hands it to its endpoint (no route in its scope, no body)."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "/jobs",
        "query_string": urlencode(query or {}).encode(),
        "headers": [],
        "path_params": path_params,
        "client": ("127.0.0.1", 1234),
    }
    return Request(scope)


def body(response: Response) -> Any:
    return json.loads(bytes(response.body))


async def test_get_task_answers_the_snapshot_with_links_under_the_root_path() -> None:
    backend = FakeBackend()
    task = backend.add("count")
    web = Web(backend, WebSettings())
    response = await endpoints.get_task(web, request(f"/tasks/{task.id}", task_id=task.id))
    assert response.status_code == 200
    assert body(response)["id"] == task.id and body(response)["state"] == "queued"
    assert body(response)["links"]["self"] == f"/jobs/tasks/{task.id}"
    with pytest.raises(NotFound):
        await endpoints.get_task(web, request("/tasks/nope", task_id="nope"))


async def test_list_tasks_filters_by_state_and_checks_the_query() -> None:
    backend = FakeBackend()
    first = backend.add("count")
    backend.publish(backend.add("count"), TaskState.RUNNING)
    web = Web(backend, WebSettings())
    response = await endpoints.list_tasks(web, request("/tasks", query={"state": "queued"}))
    assert [t["id"] for t in body(response)["tasks"]] == [first.id]
    assert body(response)["cursor"] == str(backend.seq)
    with pytest.raises(InvalidRequest, match="'state' must be one of"):
        await endpoints.list_tasks(web, request("/tasks", query={"state": "bogus"}))
    with pytest.raises(InvalidRequest, match="'limit' must be an integer"):
        await endpoints.list_tasks(web, request("/tasks", query={"limit": "0"}))


async def test_a_stream_resumed_at_its_terminal_event_is_answered_204() -> None:
    backend = FakeBackend()
    done = backend.publish(backend.add("count"), TaskState.SUCCEEDED)
    web = Web(backend, WebSettings())
    query = {"last_event_id": done.event_id or ""}
    answer = await endpoints.task_events(web, request("/tasks/x/events", query=query, task_id=done.id))
    assert answer.status_code == 204
    assert len(web.monitor) == 0  # no stream was opened


async def test_the_route_table_answers_an_endpoints_error_as_json_and_counts_it() -> None:
    backend = FakeBackend()
    web = Web(backend, WebSettings())
    spec = next(spec for spec in ROUTES if spec.path == "/tasks/{task_id}")
    methods = Methods(web, {method: endpoint for method, (endpoint, _) in spec.methods.items()})
    answer = await methods.handle(request("/tasks/nope", method="DELETE", task_id="nope"))
    assert answer.status_code == 404
    assert body(answer)["error"]["code"] == "not_found"
    assert backend.stats.rejected["not_found"] == 1
