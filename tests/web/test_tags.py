"""Tags and metadata over HTTP: ``POST /tasks`` tags, ``?tag=`` on ``GET /tasks`` and
``/events`` (first paint, cursor, resume), tag-scoped tokens; real uvicorn, every broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _support import HubFactory, LiveServer, SSEEvent, collect, finished, task_events

from sse_tasks import TaskTokens

pytestmark = pytest.mark.anyio

SECRET = "test-secret-of-sufficient-length"


async def post(http: httpx.AsyncClient, name: str, tags: Any = None, **params: Any) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "params": params}
    if tags is not None:
        body["tags"] = tags
    return await http.post("/tasks", json=body)


async def test_tags_at_submit_are_checked_and_select_the_list(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub()
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        a = (await post(http, "sleep", ["user:42", "a.b@c/d-e_f"], seconds=0)).json()
        b = (await post(http, "sleep", ["user:42"], seconds=0)).json()
        c = (await post(http, "sleep", seconds=0)).json()
        assert (a["tags"], b["tags"], c["tags"], c["metadata"]) == (
            ["user:42", "a.b@c/d-e_f"],
            ["user:42"],
            [],
            {},
        )
        for bad in (["has space"], [""], ["x" * 65], ["<script>alert(1)</script>"], [1], "user:42", {"a": 1}):
            response = await post(http, "sleep", bad, seconds=0)
            assert response.status_code == 422, (bad, response.text)
            assert "<script>" not in response.text or response.headers["content-type"] == "application/json"
        assert (await post(http, "sleep", [f"t{i}" for i in range(17)], seconds=0)).status_code == 422
        # A lone surrogate in the body: refused as text that is not Unicode.
        raw = b'{"name": "sleep", "tags": ["\\ud800"]}'
        response = await http.post("/tasks", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422

        def ids(query: str) -> list[str]:
            return [t["id"] for t in listed[query]]

        listed = {}
        for query in ("tag=user:42", "tag=user:42&tag=a.b@c/d-e_f", "tag=nobody", "tag=user:42&name=count"):
            answer = await http.get(f"/tasks?{query}")
            assert answer.status_code == 200
            listed[query] = answer.json()["tasks"]
        assert ids("tag=user:42") == [b["id"], a["id"]]
        assert ids("tag=user:42&tag=a.b@c/d-e_f") == [a["id"]]  # every tag given
        assert ids("tag=nobody") == ids("tag=user:42&name=count") == []
        for bad_query in ("tag=", "tag=a%20b", "tag=%3Cb%3E", "&".join(f"tag=t{i}" for i in range(17))):
            assert (await http.get(f"/tasks?{bad_query}")).status_code == 422, bad_query
            assert (await http.get(f"/events?{bad_query}")).status_code == 422, bad_query


def _ends(task_id: str) -> Callable[[SSEEvent], bool]:
    return lambda event: event.event == "task.succeeded" and event.json()["id"] == task_id


async def test_events_by_tag_first_paint_cursor_and_resume(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(progress_interval=0)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        # First paint: the list by tag and its cursor, then the stream from the cursor.
        first = (await http.get("/tasks?tag=user:42")).json()
        assert first["tasks"] == []
        other = (await post(http, "count", ["user:7"], n=2, interval=0)).json()
        mine = (await post(http, "count", ["user:42", "x"], n=3, interval=0)).json()
        response, events = await collect(
            http, f"/events?tag=user:42&last_event_id={first['cursor']}", until=_ends(mine["id"])
        )
        assert response.status_code == 200
        seen = task_events(events)
        assert {e.json()["id"] for e in seen} == {mine["id"]}
        assert [e.event for e in seen][:2] == ["task.queued", "task.running"]
        assert seen[-1].json()["metadata"] == {"done": 3, "total": 3}
        assert {"done": 1, "total": 3} in [e.json()["metadata"] for e in seen if e.event == "task.progress"]
        await finished(hub, other["id"])

        # Resume after the first event: the rest, in order, still only the tagged task.
        response, resumed = await collect(
            http, "/events?tag=user:42", headers={"last-event-id": seen[0].id or ""}, until=_ends(mine["id"])
        )
        assert [(e.id, e.event) for e in task_events(resumed)] == [(e.id, e.event) for e in seen[1:]]

        # A position the server cannot resume from: reset, then the current snapshots by tag.
        response, reset = await collect(
            http, "/events?tag=user:42&tag=x&last_event_id=bogus", until=_ends(mine["id"])
        )
        assert reset[0].event == "reset" or any(e.event == "reset" for e in reset)
        snapshots = task_events(reset)
        assert [e.json()["id"] for e in snapshots] == [mine["id"]]
        assert snapshots[0].json()["tags"] == ["user:42", "x"]


async def test_a_tag_token_reads_and_follows_its_tag_and_nothing_else(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(tokens=SECRET, heartbeat=0.2)  # denied streams end the read at a ping
    tokens = TaskTokens(SECRET)
    token = tokens.issue_tag("user:42")
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        cursor = (await http.get("/tasks")).json()["cursor"]
        mine = (await post(http, "sleep", ["user:42"], seconds=0)).json()
        other = (await post(http, "sleep", ["user:7"], seconds=0)).json()
        untagged = (await post(http, "sleep", seconds=0)).json()
        running = (await post(http, "sleep", ["user:42"], seconds=60)).json()
        for task in (mine, other, untagged):
            await finished(hub, task["id"])
        auth = {"token": token}

        # Allowed: the list and the stream selected by its tag, each such task and its stream.
        listed = (await http.get("/tasks", params={"tag": "user:42", **auth})).json()["tasks"]
        assert [t["id"] for t in listed] == [running["id"], mine["id"]]
        bearer = {"authorization": f"Bearer {token}"}
        assert (await http.get(f"/tasks/{mine['id']}", headers=bearer)).json()["tags"] == ["user:42"]
        response, events = await collect(
            http, f"/tasks/{mine['id']}/events?token={token}", until=_ends(mine["id"])
        )
        assert response.status_code == 200 and task_events(events)[-1].event == "task.succeeded"
        wanted = {(mine["id"], "task.succeeded"), (running["id"], "task.running")}

        def both(event: SSEEvent) -> bool:
            if event.event and event.event.startswith("task."):
                wanted.discard((event.json()["id"], event.event))
            return not wanted

        response, events = await collect(
            http, f"/events?tag=user:42&token={token}&last_event_id={cursor}", until=both
        )
        assert response.status_code == 200
        assert {e.json()["id"] for e in task_events(events)} == {mine["id"], running["id"]}

        # Denied: tasks without the tag, any list or stream not selecting it, cancelling.
        for task in (other, untagged):
            assert (await http.get(f"/tasks/{task['id']}", params=auth)).status_code == 404
            assert (await http.get(f"/tasks/{task['id']}/events", params=auth)).status_code == 404
        assert (await http.get("/tasks", params=auth)).json()["tasks"] == []
        assert (await http.get("/tasks", params={"tag": "user:7", **auth})).json()["tasks"] == []
        for query in (f"last_event_id={cursor}", f"tag=user:7&last_event_id={cursor}", "last_event_id=bogus"):
            response, events = await collect(
                http, f"/events?{query}&token={token}", until=lambda e: "ping" in e.comments, limit=20
            )
            assert response.status_code == 200
            assert task_events(events) == [], query
        assert (await http.delete(f"/tasks/{running['id']}", params=auth)).status_code == 403
        assert (await http.get(f"/tasks/{running['id']}")).status_code == 404  # no token: nothing

        # A forged, expired or task-scoped token grants no tag; a tag token is no task token.
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        expired = TaskTokens(SECRET, ttl=1, clock=lambda: 0.0).issue_tag("user:42")
        for bad in (forged, expired, mine["token"], token.replace("~user:42", "~user:7")):
            answer = await http.get("/tasks", params={"tag": "user:42", "token": bad})
            assert [t["id"] for t in answer.json()["tasks"]] in (
                [],
                [mine["id"]] if bad == mine["token"] else [],
            )
        assert tokens.verify(token) is None and tokens.verify_tag(mine["token"]) is None
        await http.delete(f"/tasks/{running['id']}", params={"token": running["token"]})


def test_tag_tokens_verify_only_their_tag_until_they_expire() -> None:
    now = [1_800_000_000.0]
    tokens = TaskTokens(SECRET, ttl=60, clock=lambda: now[0])
    token = tokens.issue_tag("a.b@c/d")
    assert token.startswith("~a.b@c/d.") and tokens.verify_tag(token) == "a.b@c/d"
    assert TaskTokens("another-secret-of-enough-length").verify_tag(token) is None
    for bad in ("has space", "", "x" * 65, "<b>"):
        with pytest.raises(ValueError):
            tokens.issue_tag(bad)
    for junk in ("~", "~.1.x", "~a..", "~a b.99999999999.x", "x" * 600):
        assert tokens.verify_tag(junk) is None
    now[0] += 61
    assert tokens.verify_tag(token) is None
