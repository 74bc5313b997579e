"""Property tests: arbitrary methods, paths, ids, queries, headers and bodies at every endpoint.

Whatever arrives: never a 500, never a stream that hangs, nothing created by a
rejected request. Request/response endpoints run in process (on the live server's
loop, through ``ASGITransport``); streams over a real socket with short deadlines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from _support import LiveServer
from conftest import HubFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_tasks import TaskHub

SECRET = "fuzzing-secret-of-enough-length"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    # CI replays the same examples every run (a red CI must be reproducible); a local
    # run explores new ones.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    hub: TaskHub
    app: Any
    server: LiveServer
    ids: list[str]
    tokens: list[str]


@pytest.fixture(params=["open", "guarded"])
def target(
    request: pytest.FixtureRequest, make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> Iterator[Target]:
    """A live hub with a finished, a failed and a running task; ``guarded`` adds tokens,
    CORS and metrics."""
    options: dict[str, Any] = {"max_queued": 50, "max_streams_per_client": 1000}
    if request.param == "guarded":
        options.update(
            tokens=SECRET, cors_origins=["https://ok.example"], cors_credentials=True, metrics=True
        )
    hub = make_hub(**options)
    app = hub.app
    server = live_server(hub, app)
    ids, tokens = [], []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for body in (
            {"name": "sleep", "params": {"seconds": 0}},
            {"name": "fail"},
            {"name": "sleep", "params": {"seconds": 600}},
        ):
            created = http.post("/tasks", json=body).json()
            ids.append(created["id"])
            tokens.append(created.get("token", ""))
    yield Target(hub, app, server, ids, tokens)


def ids(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(target.ids),
        st.text(max_size=40),
        st.sampled_from(["", "..", "%00", "x" * 300, "a/b", "<script>", "\u0000", "\ud7ff" * 3]),
    )


def tokens(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(target.tokens), st.text(max_size=60))


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SUBMISSIONS = st.fixed_dictionaries(
    {"name": st.sampled_from(["sleep", "count", "fail", "nope"]) | st.text(max_size=10)},
    optional={
        "params": st.dictionaries(st.sampled_from(["seconds", "n", "interval", "message", "x"]), JSON_VALUES)
    },
)


@st.composite
def requests(draw: st.DrawFn, target: Target, streams: bool) -> dict[str, Any]:
    task_id = quote(draw(ids(target)), safe="")
    if streams:
        path = draw(st.sampled_from([f"/tasks/{task_id}/events", "/events"]))
        method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "OPTIONS"]))
    else:
        path = draw(
            st.sampled_from(
                [
                    "/tasks",
                    "/tasks",
                    f"/tasks/{task_id}",
                    f"/tasks/{task_id}",
                    "/metrics",
                    "/openapi.json",
                    "/",
                    f"/{task_id}",
                    f"/tasks/{task_id}/x",
                ]
            )
        )
        method = draw(
            st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
            | st.from_regex(r"[A-Z]{1,8}", fullmatch=True)
        )
    query_keys = st.sampled_from(["state", "name", "limit", "task", "token", "last_event_id"]) | st.text(
        max_size=8
    )
    query_values = st.one_of(
        st.text(max_size=30),
        tokens(target),
        st.sampled_from(target.ids),
        st.sampled_from(["0", "-1", "1000000", "running"]),
    )
    query = draw(st.lists(st.tuples(query_keys, query_values), max_size=5))
    header_names = st.sampled_from(
        [
            "content-type",
            "last-event-id",
            "authorization",
            "cookie",
            "origin",
            "access-control-request-method",
            "accept",
            "x-any",
        ]
    )
    header_values = st.one_of(
        HEADER_TEXT,
        st.sampled_from(["application/json", "text/plain", "application/x+json; charset=utf-8"]),
        tokens(target).map(lambda t: f"Bearer {t}"),
        tokens(target).map(lambda t: f"sse_tasks_token={t}"),
    ).filter(lambda v: v == v.strip() and all(" " <= c <= "~" for c in v))  # what a client can send
    headers = draw(st.dictionaries(header_names, header_values, max_size=5))
    body = draw(
        st.one_of(
            st.binary(max_size=200),
            SUBMISSIONS.map(lambda d: json.dumps(d).encode()),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        )
    )
    return {"method": method, "url": path, "params": query, "headers": headers, "content": body}


@FUZZ
@given(data=st.data())
def test_request_response_endpoints_never_fail(target: Target, data: st.DataObject) -> None:
    request = data.draw(requests(target, streams=False))
    queued_before = target.hub.stats.tasks["queued"]

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=target.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
            with anyio.fail_after(10):
                return await client.request(**request)

    response: httpx.Response = target.server.call(send())
    assert response.status_code < 500, (request, response.text)
    created = target.hub.stats.tasks["queued"] - queued_before
    if response.status_code == 202 and request["method"] == "POST":
        assert created == 1
    else:
        assert created == 0, (request, response.status_code)
    if response.status_code >= 400 and request["method"] not in ("OPTIONS", "HEAD"):
        assert response.headers["content-type"].startswith("application/json"), request
        assert response.json()["error"]["code"]


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_stream_endpoints_never_fail_or_hang(target: Target, data: st.DataObject) -> None:
    request = data.draw(requests(target, streams=True))
    request["headers"].pop("content-type", None)
    timeout = httpx.Timeout(5.0)
    with httpx.Client(base_url=target.server.url, timeout=timeout) as http:
        with http.stream(**request) as response:
            assert response.status_code < 500, request
            if response.status_code == 200 and request["method"] == "GET":
                assert response.headers["content-type"].startswith("text/event-stream")
                first = next(response.iter_raw())  # the retry frame comes at once, or ReadTimeout
                assert first.startswith(b"retry: ")
            else:
                response.read()
    # A stream the client dropped is released promptly.
    for _ in range(200):
        if target.hub.open_streams == 0:
            break
        time.sleep(0.01)
    assert target.hub.open_streams == 0
