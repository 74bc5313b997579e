"""CORS: exact origins, credentials only for them, ``Vary: Origin``, SSE untouched."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from _support import HubFactory, LiveServer, collect, in_process, task_events
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount

from sse_tasks import CORSMiddleware, TaskHub

pytestmark = pytest.mark.anyio

ALLOWED = "https://app.example"
EVIL = "https://evil.example"


def preflight(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": headers,
    }


async def test_preflight_from_an_allowed_origin(make_hub: HubFactory) -> None:
    hub = make_hub(cors_origins=[ALLOWED], cors_credentials=True)
    async with in_process(hub) as client:
        response = await client.options(
            "/tasks", headers=preflight(ALLOWED, headers="Content-Type, Authorization")
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "last-event-id" in response.headers["access-control-allow-headers"]
        assert "Origin" in response.headers["vary"]


@pytest.mark.parametrize(
    "headers",
    [
        preflight(EVIL),
        preflight("https://app.example.evil.example"),
        preflight(ALLOWED + ":8443"),
        preflight("null"),
        preflight(ALLOWED, method="PUT"),
        preflight(ALLOWED, headers="x-secret-header"),
    ],
)
async def test_preflight_refused(make_hub: HubFactory, headers: dict[str, str]) -> None:
    async with in_process(make_hub(cors_origins=[ALLOWED], cors_credentials=True)) as client:
        response = await client.options("/tasks", headers=headers)
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
        assert "Origin" in response.headers["vary"]


async def test_simple_requests_get_headers_only_for_allowed_origins(make_hub: HubFactory) -> None:
    async with in_process(make_hub(cors_origins=[ALLOWED], cors_credentials=True)) as client:
        allowed = await client.get("/tasks", headers={"origin": ALLOWED})
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "Location" in allowed.headers["access-control-expose-headers"]
        assert "Origin" in allowed.headers["vary"]
        for headers in ({"origin": EVIL}, {}):
            other = await client.get("/tasks", headers=headers)
            assert other.status_code == 200  # the browser, not the server, withholds the answer
            assert "access-control-allow-origin" not in other.headers
            assert "access-control-allow-credentials" not in other.headers
            assert "Origin" in other.headers["vary"]  # caches must not mix the answers


async def test_wildcard_without_credentials(make_hub: HubFactory) -> None:
    async with in_process(make_hub(cors_origins=["*"])) as client:
        response = await client.get("/tasks", headers={"origin": EVIL})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    ("origins", "credentials"),
    [(["*"], True), (["app.example"], False), ([ALLOWED + "/"], False), (["https://*.example"], False)],
)
def test_unsafe_or_malformed_configuration_is_refused(origins: list[str], credentials: bool) -> None:
    with pytest.raises(ValueError):
        TaskHub(cors_origins=origins, cors_credentials=credentials)
    with pytest.raises(ValueError):
        CORSMiddleware(Starlette(), origins, credentials=credentials)


async def test_sse_streams_keep_working_through_cors_and_gzip(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(cors_origins=[ALLOWED], cors_credentials=True)
    app = Starlette(
        routes=[Mount("/jobs", hub.app)],
        middleware=[Middleware(GZipMiddleware, minimum_size=10)],
        lifespan=hub.lifespan,
    )
    server = live_server(hub, app)
    headers = {"origin": ALLOWED, "accept-encoding": "gzip"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        task = (
            await http.post("/jobs/tasks", json={"name": "count", "params": {"n": 3, "interval": 0.01}})
        ).json()
        response, events = await collect(http, f"/jobs/tasks/{task['id']}/events", headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "content-encoding" not in response.headers
        assert task_events(events)[-1].event == "task.succeeded"
        listed = await http.get("/jobs/tasks", headers=headers)
        assert listed.headers["access-control-allow-origin"] == ALLOWED


async def test_hub_routes_in_another_app_carry_cors(make_hub: HubFactory) -> None:
    hub = make_hub(cors_origins=[ALLOWED])
    app = Starlette(routes=[Mount("/jobs", routes=hub.routes)], lifespan=hub.lifespan)
    async with hub:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            allowed = await client.options("/jobs/tasks", headers=preflight(ALLOWED))
            assert allowed.status_code == 204
            assert allowed.headers["access-control-allow-origin"] == ALLOWED
            refused = await client.options("/jobs/tasks", headers=preflight(EVIL))
            assert refused.status_code == 403
            listed = await client.get("/jobs/tasks", headers={"origin": ALLOWED})
            assert listed.status_code == 200
            assert listed.headers["access-control-allow-origin"] == ALLOWED
            plain = await client.options("/jobs/tasks")  # not a preflight: nothing to answer
            assert plain.status_code == 405
            assert plain.json()["error"]["code"] == "method_not_allowed"
