"""Who may see a task: the authorization hook and per-task tokens.

A caller without access must learn nothing: the same 404 as a missing task, no
snapshot, no event on any stream, on first connect and on every resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from _support import HubFactory, LiveServer, collect, in_process, submit, task_events, wait_for

from sse_tasks import Access, Forbidden, RedactTokens, Task, TaskTokens, Unauthorized, owner_only
from sse_tasks.cli import log_config
from sse_tasks.web.auth import redact

pytestmark = pytest.mark.anyio

SECRET = "test-secret-of-sufficient-length"


class Clock:
    """A settable wall clock for token expiry."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def same_as_missing(response: httpx.Response, missing: httpx.Response, task_id: str, missing_id: str) -> None:
    """``response`` (a hidden task) is indistinguishable from ``missing`` (no such task)."""
    assert response.status_code == missing.status_code == 404
    assert response.text.replace(task_id, "ID") == missing.text.replace(missing_id, "ID")
    assert sorted(response.headers.keys()) == sorted(missing.headers.keys())


# -- tokens -------------------------------------------------------------------------


def test_tokens_verify_only_their_own_task_until_they_expire() -> None:
    clock = Clock()
    tokens = TaskTokens(SECRET, ttl=60, clock=clock)
    token = tokens.issue("abc")
    assert tokens.verify(token) == "abc"
    _, expires, signature = token.split(".")
    assert tokens.verify(f"abd.{expires}.{signature}") is None  # another task
    assert tokens.verify(f"abc.{int(expires) + 1000}.{signature}") is None  # extended
    assert tokens.verify(f"abc.{expires}.{signature[:-1]}x") is None  # tampered
    assert TaskTokens("another-secret-of-enough-length", clock=clock).verify(token) is None
    for junk in ["", ".", "..", "a.b.c", "a.1.", "x" * 5000, "é.1.x", "a.-1.x", "a.1.b.c"]:
        assert tokens.verify(junk) is None
    clock.now += 61
    assert tokens.verify(token) is None


def test_token_secrets_rotate_and_must_be_long() -> None:
    old = TaskTokens(SECRET)
    rotated = TaskTokens(["a-brand-new-secret-value", SECRET])
    assert rotated.verify(old.issue("t1")) == "t1"
    assert old.verify(rotated.issue("t2")) is None
    with pytest.raises(ValueError, match="16 bytes"):
        TaskTokens("short")
    with pytest.raises(ValueError, match="ttl"):
        TaskTokens(SECRET, ttl=0)


async def test_token_grants_its_task_by_header_cookie_or_query(make_hub: HubFactory) -> None:
    async with in_process(make_hub(tokens=SECRET)) as client:
        task = await submit(client, "sleep", seconds=30)
        token = task.pop("token")
        url = f"/tasks/{task['id']}"
        assert (await client.get(url, headers={"authorization": f"Bearer {token}"})).status_code == 200
        assert (await client.get(url, params={"token": token})).status_code == 200
        client.cookies.set("sse_tasks_token", token)
        got = await client.get(url)
        assert got.status_code == 200
        assert "token" not in got.json() and "owner" not in got.json()  # only the 202 carries it
        client.cookies.clear()
        listed = await client.get("/tasks", params={"token": token})
        assert [t["id"] for t in listed.json()["tasks"]] == [task["id"]]
        cancelled = await client.delete(url, headers={"authorization": f"Bearer {token}"})
        assert cancelled.status_code == 202


def forged(token: str) -> str:
    """``token`` with one character of its middle changed (its end may be "AA" already, or
    carry base64 padding bits that decode the same)."""
    i = len(token) // 2
    return token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1 :]


async def test_second_caller_learns_nothing(make_hub: HubFactory) -> None:
    clock = Clock()
    hub = make_hub(tokens=TaskTokens(SECRET, ttl=60, clock=clock))
    async with in_process(hub) as client:
        mine = await submit(client, "sleep", seconds=30)
        theirs = await submit(client, "sleep", seconds=30)
        missing_id = "x" * len(theirs["id"])
        missing = await client.get(f"/tasks/{missing_id}")
        # By id alone, by another task's token, by a forged token, by an expired one.
        attempts: list[dict[str, Any]] = [
            {},
            {"headers": {"authorization": f"Bearer {mine['token']}"}},
            {"params": {"token": mine["token"]}},
            {"params": {"token": forged(theirs["token"])}},
            {"params": {"token": "garbage"}},
        ]
        for attempt in attempts:
            same_as_missing(
                await client.get(f"/tasks/{theirs['id']}", **attempt), missing, theirs["id"], missing_id
            )
            same_as_missing(
                await client.delete(f"/tasks/{theirs['id']}", **attempt), missing, theirs["id"], missing_id
            )
            listed = (await client.get("/tasks", **attempt)).json()["tasks"]
            assert theirs["id"] not in [t["id"] for t in listed]
        clock.now += 61
        expired = await client.get(f"/tasks/{theirs['id']}", params={"token": theirs["token"]})
        same_as_missing(expired, missing, theirs["id"], missing_id)
        assert (await client.get("/tasks", params={"token": theirs["token"]})).json()["tasks"] == []
        assert hub.stats.denied > 0


async def test_hidden_tasks_stay_hidden_on_every_stream_and_resume(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(tokens=SECRET)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        before = (await http.get("/tasks")).json()["cursor"]
        theirs = await submit(http, "count", n=3, interval=0.01)
        mine = await submit(http, "fail")
        # Wait until both are finished, through their own tokens.
        for task in (theirs, mine):
            _, events = await collect(http, f"/tasks/{task['id']}/events", headers=_bearer(task))
            assert task_events(events)[-1].event in ("task.succeeded", "task.failed")
        _, done = await collect(http, f"/tasks/{theirs['id']}/events", headers=_bearer(theirs))
        last_id = task_events(done)[-1].id
        assert last_id is not None

        # The per-task stream: 404 without its token, whatever the Last-Event-ID.
        for headers in ({}, {"last-event-id": last_id}, {"last-event-id": before}, _bearer(mine)):
            response, events = await collect(http, f"/tasks/{theirs['id']}/events", headers=headers)
            assert response.status_code == 404 and events == []

        # The global stream: replay from before both tasks, and a resync, show only mine.
        def until_mine_done(event: Any) -> bool:
            return event.event == "task.failed"

        for query in (f"?last_event_id={before}", "?last_event_id=bogus"):
            response, events = await collect(
                http, f"/events{query}&token={mine['token']}", until=until_mine_done, limit=50
            )
            assert response.status_code == 200
            ids = {e.json()["id"] for e in task_events(events)}
            assert ids == {mine["id"]}
            assert theirs["id"] not in "".join(e.data for e in events)
        # With no token at all the resync carries no snapshot.
        async with http.stream("GET", "/events?last_event_id=bogus") as stream:
            body = b""
            with anyio.move_on_after(0.5):
                async for chunk in stream.aiter_bytes():
                    body += chunk
        assert b"event: reset" in body and b"event: task." not in body


def _bearer(task: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {task['token']}"}


# -- the hook -------------------------------------------------------------------------


def user(request: Any) -> str | None:
    value = request.headers.get("x-user")
    return str(value) if value else None


async def test_owner_only_hook(make_hub: HubFactory) -> None:
    hub = make_hub(authorize=owner_only, identify=user)
    async with in_process(hub) as client:
        alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
        assert (await client.post("/tasks", json={"name": "fail"})).status_code == 403  # anonymous
        task = await submit(client, "sleep", seconds=30, headers=alice)
        assert "token" not in task
        assert (await client.get(f"/tasks/{task['id']}", headers=alice)).status_code == 200
        assert (await client.get(f"/tasks/{task['id']}", headers=bob)).status_code == 404
        assert (await client.delete(f"/tasks/{task['id']}", headers=bob)).status_code == 404
        assert (await client.get(f"/events?task={task['id']}", headers=bob)).status_code == 404
        assert (await client.get("/tasks", headers=bob)).json()["tasks"] == []
        assert [t["id"] for t in (await client.get("/tasks", headers=alice)).json()["tasks"]] == [task["id"]]
        assert (await client.delete(f"/tasks/{task['id']}", headers=alice)).status_code == 202
        stored = await hub.get(task["id"])
        assert stored.owner == "alice"


async def test_hook_is_asked_on_every_request_and_may_answer_401_or_403(make_hub: HubFactory) -> None:
    revoked: set[str] = set()
    asked: list[tuple[str, str | None]] = []

    async def authorize(access: Access) -> bool | Callable[[Task], bool]:
        asked.append((access.action, access.task.id if access.task else None))
        if access.request.headers.get("x-user") is None:
            raise Unauthorized()
        if access.action == "cancel":
            raise Forbidden("read-only")
        if access.action in ("list", "follow") and access.task is None:
            return lambda task: task.id not in revoked
        return access.task is None or access.task.id not in revoked

    hub = make_hub(authorize=authorize)
    async with in_process(hub) as client:
        me = {"x-user": "me"}
        anonymous = await client.get("/tasks")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        task = await submit(client, "sleep", seconds=30, headers=me)
        assert (await client.get(f"/tasks/{task['id']}", headers=me)).status_code == 200
        denied = await client.delete(f"/tasks/{task['id']}", headers=me)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        revoked.add(task["id"])
        assert (await client.get(f"/tasks/{task['id']}", headers=me)).status_code == 404
        assert (await client.get("/tasks", headers=me)).json()["tasks"] == []
        assert ("submit", None) in asked and ("read", task["id"]) in asked and ("list", None) in asked


async def test_a_caller_who_may_read_but_not_cancel_is_told_403(make_hub: HubFactory) -> None:
    def authorize(access: Access) -> bool:
        return access.action != "cancel" or access.caller == "admin"

    hub = make_hub(authorize=authorize, identify=user)
    async with in_process(hub) as client:
        task = await submit(client, "sleep", seconds=30, headers={"x-user": "me"})
        assert (await client.get(f"/tasks/{task['id']}", headers={"x-user": "me"})).status_code == 200
        denied = await client.delete(f"/tasks/{task['id']}", headers={"x-user": "me"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        assert (await hub.get(task["id"])).state.value != "cancelled"
        allowed = await client.delete(f"/tasks/{task['id']}", headers={"x-user": "admin"})
        assert allowed.status_code == 202 and allowed.json()["state"] == "cancelled"


async def test_a_revoked_follower_is_refused_on_reconnect(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    allowed = {"yes"}

    def authorize(access: Access) -> bool:
        return access.request.query_params.get("who") in allowed

    hub = make_hub(authorize=authorize)
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.post("/tasks?who=yes", json={"name": "sleep", "params": {"seconds": 0}})
        task = response.json()
        url = f"/tasks/{task['id']}/events?who=yes"
        first, events = await collect(http, url)
        assert first.status_code == 200 and task_events(events)[-1].event == "task.succeeded"
        allowed.clear()
        again, _ = await collect(http, url, headers={"last-event-id": "bogus"})
        assert again.status_code == 404
        assert (await http.get("/events?who=yes")).status_code == 403


def test_hook_cannot_be_bypassed_by_submit_returning_a_filter() -> None:
    access = Access(action="submit", request=None, caller=None)  # type: ignore[arg-type]
    assert owner_only(access) is False


# -- logs -------------------------------------------------------------------------------


def test_tokens_are_redacted_from_access_logs() -> None:
    assert redact("GET /tasks/x/events?token=abc.1.sig&last_event_id=3") == (
        "GET /tasks/x/events?token=[redacted]&last_event_id=3"
    )
    assert redact("/events?task=a&TOKEN=s1&token=s2") == "/events?task=a&TOKEN=[redacted]&token=[redacted]"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/tasks/a/events?token=SECRET.1.sig", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert "SECRET" not in record.getMessage()
    config = log_config("info")
    assert all("redact_tokens" in handler["filters"] for handler in config["handlers"].values())


async def test_no_params_results_or_tokens_in_info_logs(
    make_hub: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sse_tasks")
    async with in_process(make_hub(tokens=SECRET)) as client:
        task = await submit(client, "fail", message="private-payload")
        token = task["token"]

        async def failed() -> bool:
            answer = await client.get(f"/tasks/{task['id']}", params={"token": token})
            return bool(answer.json()["state"] == "failed")

        await wait_for(failed, timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any(
        "task failed" in line and task["id"] in line and "error=RuntimeError" in line for line in lines
    )
    assert any("task queued" in line for line in lines)
    assert not any("private-payload" in line or token in line for line in lines)
