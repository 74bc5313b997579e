"""The HTTP API's request/response rules, in process (no streaming here)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from _support import HubFactory, finished, in_process, submit

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def count_tasks(client: httpx.AsyncClient) -> int:
    return len((await client.get("/tasks")).json()["tasks"])


async def test_submit_answers_202_with_location_and_snapshot(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
    assert response.status_code == 202
    task = response.json()
    assert response.headers["location"] == f"/tasks/{task['id']}"
    assert task["name"] == "sleep"
    assert task["state"] in ("queued", "running", "succeeded")
    assert set(task) >= {
        "id",
        "name",
        "state",
        "progress",
        "message",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "links",
    }
    base = f"/tasks/{task['id']}"
    assert task["links"] == {"self": base, "events": f"{base}/events", "output": f"{base}/output"}
    assert task["created_at"].endswith("Z")


async def test_params_default_to_empty(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json={"name": "fail"})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"name": "sleep"', JSON, 400, "bad_request"),
        (b"\xff\xfe", JSON, 400, "bad_request"),
        (b'{"name": "sleep", "params": {"seconds": NaN}}', JSON, 400, "bad_request"),
        (b"[" * 100_000, JSON, 413, "payload_too_large"),
        (b"[" * 5000 + b"]" * 5000, JSON, 400, "bad_request"),
        (b'{"name": "sleep"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"name": "sleep"}', {}, 415, "unsupported_media_type"),
        (b'{"name": "nope"}', JSON, 404, "not_found"),
        (b'["sleep"]', JSON, 422, "invalid_request"),
        (b'{"params": {}}', JSON, 422, "invalid_request"),
        (b'{"name": 3}', JSON, 422, "invalid_request"),
        (b'{"name": "sleep", "extra": 1}', JSON, 422, "invalid_request"),
        (b'{"name": "sleep", "params": []}', JSON, 422, "invalid_request"),
        (b'{"name": "sleep", "params": {"seconds": "1"}}', JSON, 422, "invalid_request"),
        (b'{"name": "sleep", "params": {"secs": 1}}', JSON, 422, "invalid_request"),
        (b'{"name": "count", "params": {"n": 1.5}}', JSON, 422, "invalid_request"),
        (b'{"name": "count", "params": {"n": true}}', JSON, 422, "invalid_request"),
        (b'{"name": "fail", "params": {"message": null}}', JSON, 422, "invalid_request"),
    ],
)
async def test_bad_submissions_get_a_clear_error_and_create_nothing(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = await client.post("/tasks", content=body, headers=headers)
    assert_error(response, status, code)
    assert await count_tasks(client) == 0


async def test_body_size_is_judged_from_content_length_before_reading(
    client: httpx.AsyncClient,
) -> None:
    async def never_sent() -> object:
        raise AssertionError("the body must not be read")
        yield b""  # pragma: no cover

    response = await client.post(
        "/tasks",
        content=never_sent(),
        headers={**JSON, "content-length": str(10**9)},
    )
    assert_error(response, 413, "payload_too_large")


async def test_body_limit_is_configurable_and_holds_without_content_length(make_hub: HubFactory) -> None:
    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8):
            yield body[i : i + 8]

    async with in_process(make_hub(max_body_size=20)) as client:
        small = await client.post("/tasks", json={"name": "fail"})
        big = await client.post("/tasks", json={"name": "fail", "params": {"message": "x" * 20}})
        streamed = await client.post(
            "/tasks", content=chunked(b'{"name": "fail", "params": {"message": "xxxxxxxx"}}'), headers=JSON
        )
        assert "content-length" not in streamed.request.headers  # judged while it is read
        assert await count_tasks(client) == 1
    assert small.status_code == 202
    assert_error(big, 413, "payload_too_large")
    assert_error(streamed, 413, "payload_too_large")


async def test_get_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/tasks/nope"), 404, "not_found")
    assert_error(await client.get("/tasks/" + "x" * 5000), 404, "not_found")
    assert_error(await client.delete("/tasks/nope"), 404, "not_found")
    assert_error(await client.get("/tasks/nope/events"), 404, "not_found")


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nowhere"), 404, "not_found")
    assert_error(await client.put("/tasks"), 405, "method_not_allowed")


async def test_get_returns_the_snapshot(client: httpx.AsyncClient) -> None:
    created = (await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 5}})).json()
    fetched = await client.get(f"/tasks/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["id"] == created["id"]
    assert fetched.json()["name"] == "sleep"


async def test_cancel_then_conflict(client: httpx.AsyncClient, running_hub: TaskHub) -> None:
    created = (await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
    cancelled = await client.delete(f"/tasks/{created['id']}")
    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert_error(await client.delete(f"/tasks/{created['id']}"), 409, "already_finished")
    assert (await client.get(f"/tasks/{created['id']}")).json()["state"] == "cancelled"


async def test_list_filters_and_cursor(client: httpx.AsyncClient, running_hub: TaskHub) -> None:
    a = (await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
    b = (await client.post("/tasks", json={"name": "fail"})).json()
    c = (await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
    await client.delete(f"/tasks/{c['id']}")
    listing = (await client.get("/tasks")).json()
    assert [t["id"] for t in listing["tasks"]] == [c["id"], b["id"], a["id"]]  # newest first
    assert isinstance(listing["cursor"], str) and listing["cursor"]
    by_name = (await client.get("/tasks", params={"name": "fail"})).json()["tasks"]
    assert [t["id"] for t in by_name] == [b["id"]]
    cancelled = (await client.get("/tasks", params={"state": "cancelled"})).json()["tasks"]
    assert [t["id"] for t in cancelled] == [c["id"]]
    limited = (await client.get("/tasks", params={"limit": 2})).json()["tasks"]
    assert [t["id"] for t in limited] == [c["id"], b["id"]]


@pytest.mark.parametrize(
    "query", [{"state": "sleeping"}, {"limit": "0"}, {"limit": "-1"}, {"limit": "x"}, {"limit": "5000"}]
)
async def test_list_rejects_bad_queries(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    assert_error(await client.get("/tasks", params=query), 422, "invalid_request")


async def test_queue_full_is_503_with_retry_after(make_hub: object) -> None:
    import anyio

    from sse_tasks import TaskContext

    hub: TaskHub = make_hub(concurrency=1, max_queued=2)  # type: ignore[operator]
    started = anyio.Event()

    @hub.task
    async def block(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    async with hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.post("/tasks", json={"name": "block"})
            await started.wait()  # the only worker is busy: the next two wait in the queue
            accepted = [await client.post("/tasks", json={"name": "block"}) for _ in range(2)]
            rejected = await client.post("/tasks", json={"name": "block"})
            assert first.status_code == 202
            assert [r.status_code for r in accepted] == [202, 202]
            assert_error(rejected, 503, "queue_full")
            assert rejected.headers["retry-after"].isdigit()
            assert await count_tasks(client) == 3


async def test_shutting_down_is_503(client: httpx.AsyncClient, running_hub: TaskHub) -> None:
    await running_hub.shutdown()
    response = await client.post("/tasks", json={"name": "fail"})
    assert_error(response, 503, "shutting_down")
    assert "retry-after" in response.headers
    assert_error(await client.get("/events"), 503, "shutting_down")


async def test_hub_not_running_is_503(hub: TaskHub) -> None:

    transport = httpx.ASGITransport(app=hub.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert_error(await client.post("/tasks", json={"name": "fail"}), 503, "not_running")


async def test_expired_task_is_410(make_hub: HubFactory) -> None:
    hub = make_hub(retention=0)
    async with in_process(hub) as client:
        task = await submit(client, "fail")
        await finished(hub, task["id"])
        assert_error(await client.get(f"/tasks/{task['id']}"), 410, "gone")
        assert_error(await client.get(f"/tasks/{task['id']}/events"), 410, "gone")
        assert_error(await client.get(f"/events?task={task['id']}"), 410, "gone")
        assert_error(await client.delete(f"/tasks/{task['id']}"), 410, "gone")


async def test_behind_an_authorization_hook_an_expired_task_is_404(make_hub: HubFactory) -> None:
    hub = make_hub(retention=0, authorize=lambda access: True)
    async with in_process(hub) as client:
        task = await submit(client, "fail")
        await finished(hub, task["id"])
        # 410 would tell a caller that the id once existed, whoever it belonged to.
        for url in (f"/tasks/{task['id']}", f"/tasks/{task['id']}/events", f"/events?task={task['id']}"):
            assert_error(await client.get(url), 404, "not_found")
        assert_error(await client.delete(f"/tasks/{task['id']}"), 404, "not_found")


async def test_events_of_an_unknown_task_or_name_answer_404(client: httpx.AsyncClient) -> None:
    known = (await client.post("/tasks", json={"name": "sleep", "params": {"seconds": 30}})).json()
    for url in ["/events?task=nope", f"/events?task={known['id']}&task=nope", "/events?name=nope"]:
        response = await client.get(url)
        assert_error(response, 404, "not_found")
        assert "nope" in response.json()["error"]["message"]
    await client.delete(f"/tasks/{known['id']}")
