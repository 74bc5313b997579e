"""The browser module (``<mount>/sse-tasks.js``) in a real headless Chromium.

The module is imported from the hub by a page on another origin (two real uvicorn
servers on two loopback ports, the hub allowing the page's origin by CORS), so every
link it follows must resolve against the hub, not the page. On memory:// and redis://.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _browser import Page
from _support import LiveServer, serve_in_thread, submit_sync
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from sse_tasks import TaskHub
from sse_tasks.demo import generated_text

WAIT_MS = 15_000
MOUNT = "/jobs"

#: A page that imports the module from ``?module=`` and records what it is told.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>browser module</title></head><body>
<script type="module">
window.log = [];
window.mod = await import(new URLSearchParams(location.search).get("module"));
window.record = (...entry) => window.log.push(entry);
window.recorder = () => ({
  onUpdate: (t) => record("update", t.id, t.state, t.name),
  onOutput: (c) => record("output", c.id, c.seq, c.kind, c.text),
  onDone: (t) => record("done", t.id, t.state),
  onReset: () => record("reset"),
  onError: (e) => record("error", e.message, e.status, e.fatal),
});
document.title = "ready";
</script></body></html>
"""


@pytest.fixture
def pages() -> Iterator[LiveServer]:
    """The page's own origin: serves the test page and nothing else."""

    async def test_page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    with serve_in_thread(Starlette(routes=[Route("/page.html", test_page)])) as server:
        yield server


@pytest.fixture
def hub_url(
    make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer], pages: LiveServer
) -> str:
    """A hub with the demo tasks under /jobs on its own origin, allowing the page's."""
    hub = make_hub(shutdown_grace=0.5, cors_origins=[pages.url])
    app = Starlette(routes=[Mount(MOUNT, app=hub.app)], lifespan=hub.lifespan)
    server = live_server(hub, app)
    assert server.url != pages.url
    return server.url + MOUNT


def open_page(page: Page, pages: LiveServer, hub_url: str) -> None:
    page.goto(f"{pages.url}/page.html?module={hub_url}/sse-tasks.js")
    page.wait_for_function("document.title === 'ready'", timeout=WAIT_MS)


def wait_log(page: Page, predicate: str) -> list[list[Any]]:
    """Wait (bounded) until ``predicate`` (JS, over ``log``) holds; the log."""
    page.wait_for_function(f"(() => {{ const log = window.log; return {predicate}; }})()", timeout=WAIT_MS)
    log: list[list[Any]] = page.evaluate("window.log")
    return log


def wait_finished(hub_url: str, task_id: str) -> None:
    """Read the task's own stream until it ends (the server ends it after the terminal event)."""
    with httpx.stream("GET", f"{hub_url}/tasks/{task_id}/events", timeout=WAIT_MS / 1000) as response:
        lines = list(response.iter_lines())
    assert "event: task.succeeded" in lines


def outputs_of(log: list[list[Any]], task_id: str) -> list[list[Any]]:
    return [entry for entry in log if entry[0] == "output" and entry[1] == task_id]


def assert_output_once_in_order(log: list[list[Any]], task_id: str, words: int) -> None:
    chunks = outputs_of(log, task_id)
    assert [c[2] for c in chunks] == list(range(words + words // 10))  # output and log lines
    assert "".join(c[4] for c in chunks if c[3] == "output") == generated_text(words)
    assert [c[4] for c in chunks if c[3] == "log"] == [
        f"{n} of {words} words" for n in range(10, words + 1, 10)
    ]


def test_the_module_is_served_as_javascript(hub_url: str, pages: LiveServer) -> None:
    response = httpx.get(f"{hub_url}/sse-tasks.js", headers={"Origin": pages.url})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == pages.url  # a cross-origin import
    assert "export function followTask(" in response.text
    assert "export function followTasks(" in response.text


def test_the_module_knows_the_hub_it_came_from(page: Page, pages: LiveServer, hub_url: str) -> None:
    open_page(page, pages, hub_url)
    assert page.evaluate("window.mod.hubUrl") == hub_url + "/"
    assert page.evaluate("window.mod.resolve('/jobs/tasks/x/events').href") == f"{hub_url}/tasks/x/events"


def test_follow_task_from_another_origin(page: Page, pages: LiveServer, hub_url: str) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_page(page, pages, hub_url)
    words = 30
    task_id = page.evaluate(
        """async (words) => {
          const response = await fetch(new URL("tasks", mod.hubUrl), {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({name: "generate", params: {words, delay: 0.01}}),
          });
          const task = await response.json();
          // links.events is root-relative: the module resolves it against the hub.
          window.follower = mod.followTask(task.links.events, recorder());
          return task.id;
        }""",
        words,
    )
    log = wait_log(page, "log.some((e) => e[0] === 'done')")

    assert log[-1] == ["done", task_id, "succeeded"]
    updates = [e for e in log if e[0] == "update"]
    assert updates[0][2] in ("queued", "running")
    assert updates[-1] == ["update", task_id, "succeeded", "generate"]
    assert log.index(updates[-1]) == len(log) - 2  # every chunk before the terminal snapshot
    assert_output_once_in_order(log, task_id, words)
    assert not [e for e in log if e[0] in ("error", "reset")]
    streams = [url for url in requests if "/events" in url]
    assert streams == [f"{hub_url}/tasks/{task_id}/events"]  # closed at the end: no reconnect


def test_follow_task_replays_a_finished_task(page: Page, pages: LiveServer, hub_url: str) -> None:
    task_id = submit_sync(hub_url, "generate", words=20, delay=0)["id"]
    wait_finished(hub_url, task_id)
    open_page(page, pages, hub_url)
    page.evaluate(
        "(id) => { window.follower = mod.followTask(`/jobs/tasks/${id}/events`, recorder()); }", task_id
    )
    log = wait_log(page, "log.some((e) => e[0] === 'done')")
    assert_output_once_in_order(log, task_id, 20)
    assert log[-2:] == [["update", task_id, "succeeded", "generate"], ["done", task_id, "succeeded"]]


def test_follow_task_backs_off_while_the_stream_is_refused(
    page: Page, pages: LiveServer, hub_url: str
) -> None:
    refused: list[str] = []

    def refuse_twice(route: Any) -> None:
        if len(refused) < 2:  # the stream, then the request asking why
            refused.append(route.request.url)
            route.fulfill(status=503, headers={"Access-Control-Allow-Origin": pages.url, "Retry-After": "1"})
        else:
            route.continue_()

    page.route(re.compile(r"/tasks/[\w-]+/events(\?|$)"), refuse_twice)
    open_page(page, pages, hub_url)
    task_id = submit_sync(hub_url, "generate", words=12, delay=0.01)["id"]
    page.evaluate(
        "(id) => { window.follower = mod.followTask(`/jobs/tasks/${id}/events`, recorder()); }", task_id
    )
    log = wait_log(page, "log.some((e) => e[0] === 'done')")
    errors = [e for e in log if e[0] == "error"]
    assert len(errors) == 1
    assert errors[0][2:] == [503, False]
    assert_output_once_in_order(log, task_id, 12)


def test_follow_tasks_paints_follows_and_resets(page: Page, pages: LiveServer, hub_url: str) -> None:
    # Before the page: a finished generation, whose output the first paint must replay.
    earlier = submit_sync(hub_url, "generate", words=20, delay=0)["id"]
    wait_finished(hub_url, earlier)
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/events" in request.url else None)
    open_page(page, pages, hub_url)

    page.evaluate("() => { window.follower = mod.followTasks(mod.hubUrl, {...recorder(), output: true}); }")
    log = wait_log(page, f"log.filter((e) => e[0] === 'output' && e[1] === '{earlier}').length === 22")
    assert log[0] == ["update", earlier, "succeeded", "generate"]  # the first paint
    assert_output_once_in_order(log, earlier, 20)

    # Live: a task started after the first paint, followed to its end on the same stream.
    later = submit_sync(hub_url, "generate", words=30, delay=0.01)["id"]
    log = wait_log(page, f"log.some((e) => e[0] === 'update' && e[1] === '{later}' && e[2] === 'succeeded')")
    log = wait_log(page, f"log.filter((e) => e[0] === 'output' && e[1] === '{later}').length === 33")
    states = [e[2] for e in log if e[0] == "update" and e[1] == later]
    assert states[0] in ("queued", "running") and states[-1] == "succeeded"
    assert states == sorted(states, key=["queued", "running", "succeeded"].index)
    assert_output_once_in_order(log, later, 30)
    assert not [e for e in log if e[0] in ("reset", "error")]
    global_streams = [url for url in streams if "/jobs/events" in url]
    assert (
        len(global_streams) == 1 and "last_event_id=" in global_streams[0] and "output=1" in global_streams[0]
    )


def test_follow_tasks_resets_after_an_unknown_cursor(page: Page, pages: LiveServer, hub_url: str) -> None:
    done = submit_sync(hub_url, "generate", words=10, delay=0)["id"]
    wait_finished(hub_url, done)

    def forged_cursor(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["cursor"] = "from-another-server-1"
        route.fulfill(response=response, json=body)

    page.route(re.compile(r"/jobs/tasks\?"), forged_cursor)
    open_page(page, pages, hub_url)
    page.evaluate("() => { window.follower = mod.followTasks({...recorder(), output: true}); }")
    log = wait_log(
        page,
        "log.some((e) => e[0] === 'reset') && "
        "log.slice(log.findIndex((e) => e[0] === 'reset')).filter((e) => e[0] === 'output').length === 11",
    )
    reset_at = log.index(["reset"])
    assert log.count(["reset"]) == 1
    assert ["update", done, "succeeded", "generate"] in log[:reset_at]  # the first paint
    after = log[reset_at + 1 :]
    assert ["update", done, "succeeded", "generate"] in after  # repainted from the snapshots
    assert_output_once_in_order(after, done, 10)  # output restarts at seq 0, once
    # Live after the reset.
    live = submit_sync(hub_url, "generate", words=10, delay=0)["id"]
    log = wait_log(page, f"log.filter((e) => e[0] === 'output' && e[1] === '{live}').length === 11")
    assert_output_once_in_order(log, live, 10)


def test_follow_tasks_by_tag_paints_and_follows_only_those(
    page: Page, pages: LiveServer, hub_url: str
) -> None:
    def post(tags: list[str]) -> str:
        body = {"name": "count", "params": {"n": 2, "interval": 0}, "tags": tags}
        response = httpx.post(f"{hub_url}/tasks", json=body, timeout=WAIT_MS / 1000)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    before, other = post(["user:42", "x"]), post(["user:7"])
    wait_finished(hub_url, before)
    wait_finished(hub_url, other)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url) if "/jobs/" in request.url else None)
    open_page(page, pages, hub_url)
    page.evaluate("() => { window.follower = mod.followTasks({...recorder(), tags: ['user:42', 'x']}); }")
    wait_log(page, f"log.some((e) => e[0] === 'update' && e[1] === '{before}')")
    later, skipped = post(["x", "user:42", "more"]), post(["user:42"])
    wait_finished(hub_url, skipped)
    log = wait_log(page, f"log.some((e) => e[0] === 'update' && e[1] === '{later}' && e[2] === 'succeeded')")
    shown = {e[1] for e in log if e[0] == "update"}
    assert shown == {before, later}, log
    assert not [e for e in log if e[0] in ("reset", "error")]
    assert any("/jobs/tasks?" in url and "tag=user%3A42&tag=x" in url for url in urls), urls
    assert any("/jobs/events?" in url and "tag=user%3A42&tag=x" in url for url in urls), urls
