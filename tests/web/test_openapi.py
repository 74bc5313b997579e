"""``/openapi.json``: generated from the routes the hub serves and from the Task model."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _support import HubFactory, LiveServer, collect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sse_tasks import Task, TaskHub
from sse_tasks.web.openapi import Answer, Operation, Param
from sse_tasks.web.routes import APIRoute

pytestmark = pytest.mark.anyio

WEB = Path(__file__).parents[2] / "sse_tasks" / "web"
SECRET = "a secret of at least sixteen bytes"


async def document(app: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def methods(route: BaseRoute) -> set[str]:
    assert isinstance(route, Route), route
    return set(route.methods or ()) - {"HEAD", "OPTIONS"}


@pytest.mark.parametrize("cors", [(), ("https://app.example",)])
async def test_every_route_and_method_the_hub_serves_is_documented(make_hub: HubFactory, cors: Any) -> None:
    hub = make_hub(metrics=True, cors_origins=cors)
    app = hub.app
    async with hub:
        paths = (await document(app))["paths"]
    for routes in (app.routes, hub.routes):  # its own app, and the routes to mount elsewhere
        served = {route.path: methods(route) for route in routes if isinstance(route, Route)}
        assert len(served) == len(routes)
        assert served == {path: {method.upper() for method in item} for path, item in paths.items()}
    assert {"/tasks/{task_id}/output", "/metrics", "/openapi.json", "/sse-tasks.js"} <= set(paths)
    for path, item in paths.items():
        declared = {
            p["name"]
            for p in item.get("get", item.get("post", {})).get("parameters", [])
            if p["in"] == "path"
        }
        assert declared == {part.strip("{}") for part in path.split("/") if part.startswith("{")}, path


@pytest.mark.parametrize("tokens", [None, SECRET], ids=["open", "tokens"])
async def test_no_endpoint_reads_a_parameter_it_does_not_declare(
    make_hub: HubFactory, live_server: Callable[..., LiveServer], tokens: str | None
) -> None:
    """Every route and method of a live hub, called with every parameter it declares:
    reading one it does not declare answers 500 (a RuntimeError), so none may."""
    hub = make_hub(metrics=True, tokens=tokens)
    server = live_server(hub)
    routes = [route for route in hub.app.routes if isinstance(route, APIRoute)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        posted = (await http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})).json()
        headers = {"Authorization": f"Bearer {posted['token']}"} if tokens else {}
        await collect(http, f"/tasks/{posted['id']}/events", headers=headers)  # finished
        # Values that get each endpoint past its checks to every read (an unknown task id
        # would end /events at a 404 before it reads ?name=); an empty Last-Event-ID header
        # makes the stream read ?last_event_id= too.
        values = {
            "task": posted["id"],
            "name": "sleep",
            "state": "succeeded",
            "limit": "5",
            "output": "1",
            "token": posted.get("token", "x"),
            "Last-Event-ID": "",
            "last_event_id": "",
        }
        checked = 0
        for route in routes:
            url = route.path.replace("{task_id}", posted["id"])
            for method, operation in route.operations.items():
                query = [
                    (p.name, values.get(p.name, "x")) for p in operation.parameters if p.where == "query"
                ]
                sent = {p.name: values.get(p.name, "x") for p in operation.parameters if p.where == "header"}
                body = {"name": "sleep", "params": {"seconds": 0}} if operation.body is not None else None
                with anyio.fail_after(10):
                    async with http.stream(
                        method, url, params=query, headers={**headers, **sent}, json=body
                    ) as response:
                        assert response.status_code != 500, (method, route.path, await response.aread())
                checked += 1
    assert checked >= 9


async def test_a_parameter_read_without_being_declared_fails_loudly() -> None:
    secret = Param("secret", {"type": "string"}, "not declared below")

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"secret": secret.get(request)})

    operation = Operation("Leaks a parameter", (Answer(200, "ok"),))
    app = Starlette(routes=[APIRoute("/leak", endpoint, {"GET": operation})])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.raises(
            RuntimeError, match="GET /leak reads the query parameter 'secret' without declaring"
        ):
            await http.get("/leak")


def test_endpoints_read_query_parameters_only_through_their_declarations() -> None:
    readers = sorted(p.name for p in WEB.rglob("*.py") if "query_params" in p.read_text())
    assert readers == ["openapi.py"]


async def test_the_snapshot_schema_has_every_key_of_a_real_snapshot(running_hub: TaskHub) -> None:
    schema = (await document(running_hub.app))["components"]["schemas"]["Task"]
    properties = schema["properties"]
    failed = await running_hub.submit("fail", message="boom", tags=["user:42", "a.b@c/d-e_f"])
    with anyio.fail_after(10):
        while not (task := await running_hub.get(failed.id)).terminal:
            await anyio.sleep(0.01)
    assert task.tags == ("user:42", "a.b@c/d-e_f")
    tagged = Task(id="q", name="n", metadata={"done": 1, "total": 3}, tags=("x",))
    snapshots = [task.to_dict(), Task(id="q", name="n").to_dict(), tagged.to_dict()]
    assert not _fits(["no spaces"], properties["tags"])
    assert not _fits([str(i) for i in range(17)], properties["tags"])
    submit = (await document(running_hub.app))["components"]["schemas"]["Submit"]["properties"]
    assert submit["tags"] == {"type": "array", "items": properties["tags"]["items"], "maxItems": 16}
    for snapshot in snapshots:
        assert set(snapshot) == set(properties) - {"token"}
        assert set(schema["required"]) <= set(snapshot)
        for key, value in snapshot.items():
            assert _fits(value, properties[key]), (key, value, properties[key])
    assert set(schema["required"]) == {
        "id",
        "name",
        "state",
        "created_at",
        "output_chunks",
        "metadata",
        "tags",
        "links",
    }
    assert properties["links"]["properties"].keys() == snapshots[0]["links"].keys()


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    kinds = schema.get("type")
    if kinds is None:
        return True
    python = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "object": dict,
        "array": list,
        "null": type(None),
    }
    if isinstance(value, list) and "items" in schema:
        if len(value) > schema.get("maxItems", len(value)):
            return False
        if not all(_fits(item, schema["items"]) for item in value):
            return False
    if isinstance(value, str) and "pattern" in schema and re.fullmatch(schema["pattern"], value) is None:
        return False
    return any(isinstance(value, python[kind]) for kind in ([kinds] if isinstance(kinds, str) else kinds))


async def test_the_document_names_the_registered_tasks(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    names = document["components"]["schemas"]["Submit"]["properties"]["name"]["enum"]
    assert names == ["count", "fail", "generate", "sleep"]


async def test_the_document_lists_the_refusals_every_task_operation_can_give(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    operations = {
        (path, method): set(operation["responses"])
        for path, item in paths.items()
        for method, operation in item.items()
        if path.startswith(("/tasks", "/events"))
    }
    # Any request may meet an unreachable broker or an authorization hook that wants credentials.
    for key, statuses in operations.items():
        assert {"401", "503"} <= statuses, key
    assert "404" in operations[("/events", "get")]
    assert {"404", "409", "410"} <= operations[("/tasks/{task_id}", "delete")]
    assert {"200", "204"} <= operations[("/tasks/{task_id}/events", "get")]
    listed = {p["name"] for p in paths["/events"]["get"]["parameters"]}
    assert {"task", "name", "tag", "output", "token", "Last-Event-ID", "last_event_id"} == listed
    listed = {p["name"] for p in paths["/tasks"]["get"]["parameters"]}
    assert {"state", "name", "tag", "limit", "before", "token"} == listed
