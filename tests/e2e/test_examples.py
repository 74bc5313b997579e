"""The examples work as their docstrings say, on a real server (links respect the mount)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from urllib.parse import quote

import anyio
import httpx
import pytest
from _support import ROOT, HubFactory, ServerFactory, collect, in_process, serve_in_thread, task_events
from starlette.applications import Starlette
from starlette.routing import Mount

from sse_tasks import TaskHub

pytestmark = pytest.mark.anyio

sys.path.insert(0, str(ROOT))


def load(name: str) -> object:
    return importlib.import_module(f"examples.{name}")


async def test_background_tasks_example_is_observable(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    module = load("background_tasks")
    monkeypatch.setattr(module, "GREETING_SECONDS", 0.2)
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.get("/")
            assert response.status_code == 200
            body = response.json()
            assert body["msg"] == "Hello World"
            task = body["task"]
            assert task["links"]["events"] == f"/jobs/tasks/{task['id']}/events"
            _, events = await collect(http, task["links"]["events"])
            # The starting example's unchanged function: no context, no progress, tracked.
            changes = task_events(events)
            assert [e.json()["state"] for e in changes][-2:] == ["running", "succeeded"]
            assert changes[-1].json()["result"] is None
            assert "Hello Ithome~" in capfd.readouterr().out

            richer = (await http.get("/progress")).json()["task"]
            _, events = await collect(http, richer["links"]["events"])
    changes = task_events(events)
    assert changes[-1].event == "task.succeeded"
    assert changes[-1].json()["result"] == "Hello Ithome~"
    assert changes[-1].json()["links"]["self"] == f"/jobs/tasks/{richer['id']}"
    assert any(e.event == "task.progress" for e in changes)


async def test_starlette_mount_example() -> None:
    module = load("starlette_mount")
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/api/imports", params={"rows": 3})
            assert response.status_code == 202
            task = response.json()
            assert response.headers["location"] == f"/api/tasks/{task['id']}"
            _, events = await collect(http, task["links"]["events"])
            listing = (await http.get("/api/tasks")).json()
    changes = task_events(events)
    assert changes[-1].event == "task.succeeded"
    assert changes[-1].json()["result"] == {"imported": 3}
    assert all(e.json()["links"]["events"].startswith("/api/tasks/") for e in changes)
    assert listing["tasks"][0]["links"]["self"] == f"/api/tasks/{task['id']}"


async def test_fastapi_example() -> None:
    module = load("fastapi_app")
    with serve_in_thread(module.app, module.hub) as server:  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/reports", params={"rows": 3})
            assert response.status_code == 202
            task = response.json()
            _, events = await collect(http, f"/tasks/{task['id']}/events")
            bad = await http.post("/tasks", json={"name": "report", "params": {"rows": "x"}})
    assert task_events(events)[-1].json()["result"] == {"rows": 3}
    assert bad.status_code == 422


# (example module, method, its own endpoint that starts a task, where its hub is mounted)
ENDPOINTS = [
    ("starlette_mount", "POST", "/api/imports", "/api"),
    ("fastapi_app", "POST", "/reports", ""),
    ("background_tasks", "GET", "/", "/jobs"),
]
ROWS_ENDPOINTS = [e for e in ENDPOINTS if e[0] != "background_tasks"]  # the ones that take ?rows=
each_endpoint = pytest.mark.parametrize(
    ("example", "method", "path", "mount"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS]
)
each_rows_endpoint = pytest.mark.parametrize(
    ("example", "method", "path", "mount"), ROWS_ENDPOINTS, ids=[e[0] for e in ROWS_ENDPOINTS]
)

# Query values as they travel, percent-encoded. "%ED%A0%80" is what a lone surrogate
# (U+D800) would be in UTF-8: what a client sends when it encodes one anyway.
BAD_ROWS = {
    "not a number": "abc",
    "empty": "",
    "negative": "-5",
    "zero": "0",
    "a fraction": "2.5",
    "1e400": "1e400",
    "10**30": str(10**30),
    "5,000 digits": "9" * 5000,
    "superscript two": quote("²"),
    "arabic-indic three": quote("٣"),
    "lone surrogate": "%ED%A0%80",
    "NUL": "%00",
}


async def count_tasks(http: httpx.AsyncClient, mount: str) -> int:
    response = await http.get(f"{mount}/tasks", params={"limit": 1000})
    assert response.status_code == 200
    return len(response.json()["tasks"])


@each_rows_endpoint
async def test_example_endpoints_refuse_bad_rows_with_422(
    example: str, method: str, path: str, mount: str
) -> None:
    module = load(example)
    async with in_process(module.app) as http:  # type: ignore[attr-defined]
        before = await count_tasks(http, mount)
        for label, raw in BAD_ROWS.items():
            response = await http.request(method, f"{path}?rows={raw}")
            assert response.status_code == 422, (label, response.status_code, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_request", label
            assert "rows" in error["message"], label
            assert "Location" not in response.headers
        assert await count_tasks(http, mount) == before  # nothing was queued


@each_rows_endpoint
async def test_example_endpoints_accept_rows_in_range(
    example: str, method: str, path: str, mount: str
) -> None:
    module = load(example)
    async with in_process(module.app) as http:  # type: ignore[attr-defined]
        response = await http.request(method, f"{path}?rows=1")
        assert response.status_code == 202, response.text
        task = response.json()
        assert response.headers["location"] == task["links"]["self"]
        with anyio.fail_after(20):  # the per-task stream ends after the terminal event
            events = await http.get(task["links"]["events"])
    assert '"state":"succeeded"' in events.text


@each_endpoint
async def test_example_endpoints_pass_on_the_hubs_refusal(
    example: str, method: str, path: str, mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub that refuses (here: shutting down) is its 503 with Retry-After in its error shape, not a 500."""
    module = load(example)
    async with in_process(module.app) as http:  # type: ignore[attr-defined]
        await module.hub.shutdown()  # type: ignore[attr-defined]
        response = await http.request(method, path)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "shutting_down"
    assert response.headers["retry-after"].isdigit()


@pytest.mark.parametrize(
    ("example", "mount", "name"), [("starlette_mount", "/api", "import_rows"), ("fastapi_app", "", "report")]
)
@pytest.mark.parametrize("rows", [0, -1, 10_001, 10**15])
async def test_example_tasks_check_their_range_when_submitted_to_the_hub(
    example: str, mount: str, name: str, rows: int
) -> None:
    """``POST /tasks`` bypasses the example's endpoint: the task refuses rows out of range."""
    module = load(example)
    async with in_process(module.app) as http:  # type: ignore[attr-defined]
        response = await http.post(f"{mount}/tasks", json={"name": name, "params": {"rows": rows}})
        assert response.status_code == 202, response.text
        with anyio.fail_after(20):  # the per-task stream ends after the terminal event
            await http.get(response.json()["links"]["events"])
        task = (await http.get(response.json()["links"]["self"])).json()
    assert task["state"] == "failed"
    assert task["error"] == {"type": "ValueError", "message": "rows must be from 1 to 10000"}


CURL_SH = ROOT / "examples" / "curl.sh"
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def run_curl_sh(*args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(30):
        return await anyio.run_process(["bash", str(CURL_SH), *args], check=False)


@needs_curl
@pytest.mark.parametrize("mount", ["", "/jobs"], ids=["at the root", "mounted under /jobs"])
async def test_curl_sh_follows_a_task_to_the_end(
    make_hub: HubFactory, live_server: ServerFactory, mount: str
) -> None:
    hub = make_hub()
    app = Starlette(routes=[Mount(mount, app=hub.app)], lifespan=hub.lifespan) if mount else None
    server = live_server(hub, app)
    done = await run_curl_sh(server.url + mount + "/")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "event: task.succeeded" in out
    assert '"result":{"count":5}' in out
    assert f'"self":"{mount}/tasks/' in out


@needs_curl
async def test_curl_sh_reports_the_hubs_error(live_server: ServerFactory) -> None:
    hub = TaskHub("memory://", shutdown_grace=0.5)  # no demo tasks: no "count"
    server = live_server(hub)
    done = await run_curl_sh(server.url)
    assert done.returncode == 1
    assert '"code":"not_found"' in done.stderr.decode()
    assert done.stdout == b""
