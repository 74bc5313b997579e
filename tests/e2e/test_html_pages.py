"""The demo's /htmx and /datastar pages in a real Chromium against a real uvicorn."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from _browser import Page, expect
from _support import LiveServer, with_routes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sse_tasks import TaskContext, TaskHub
from sse_tasks.demo import generated_text, register_demo_tasks
from sse_tasks.demo.html_pages import html_page_routes
from sse_tasks.demo.page import page_routes

expect.set_options(timeout=10_000)

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"><b id=bold>\'"\u2028'


@dataclass
class Network:
    """Stands between the browser and the hub: sees each stream request and can fail some.

    ``refuse_resume``: answer 503 to the first request carrying ``Last-Event-ID`` (a proxy
    failing a reconnect), so htmx's extension opens a fresh ``EventSource`` without one.
    ``cut_after``: drop the first stream's connection after that many body messages.
    """

    app: ASGIApp
    refuse_resume: bool = False
    cut_after: int | None = None
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Last-Event-ID, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not re.search(r"/tasks/[^/]+/(htmx|datastar)$", path):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        last = headers.get(b"last-event-id")
        resume = last.decode() if last else None
        if resume is not None and self.refuse_resume:
            self.refuse_resume = False
            self.requests.append((path, resume, 503))
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.requests.append((path, resume, 200))
        cut, self.cut_after = self.cut_after, None
        sent = 0

        async def counting(message: Message) -> None:
            nonlocal sent
            if cut is not None and message["type"] == "http.response.body":
                sent += 1
                if sent > cut:
                    raise ConnectionAbortedError("the test cuts this connection")
            await send(message)

        try:
            await self.app(scope, receive, counting)
        except ConnectionAbortedError:
            return  # the response is left unfinished: uvicorn closes the connection

    def stream_requests(self) -> list[tuple[str, str | None, int]]:
        return list(self.requests)


def demo_hub(**options: Any) -> TaskHub:
    hub = TaskHub("memory://", shutdown_grace=0.5, **options)
    register_demo_tasks(hub)

    async def hostile(ctx: TaskContext) -> None:
        ctx.progress(0.5, HOSTILE)
        ctx.output(HOSTILE)
        ctx.log(HOSTILE, level="warning")
        raise ValueError(HOSTILE)

    hub.register(hostile)
    return hub


@pytest.fixture
def site(live_server: Callable[..., LiveServer]) -> Callable[..., tuple[LiveServer, TaskHub, Network]]:
    def start(**options: Any) -> tuple[LiveServer, TaskHub, Network]:
        hub = demo_hub(**options)
        network = Network(with_routes(hub, [*page_routes(), *html_page_routes(hub)]))
        return live_server(hub, network), hub, network

    return start


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def start(page: Page, name: str, **fields: Any) -> Any:
    form = page.locator("form", has=page.get_by_role("button", name=f"Start {name}"))
    for label, value in fields.items():
        form.get_by_label(label, exact=True).fill(str(value))
    form.get_by_role("button", name=f"Start {name}").click()
    task = page.locator("section.task").first
    expect(task).to_be_visible()
    return task


def check_output(task: Any, words: int) -> None:
    """Every chunk exactly once, in order: ids 0…n-1, the words' text, n/10 log lines."""
    logs = words // 10
    expect(task.locator(".sse-task-out")).to_have_count(words)
    expect(task.locator(".sse-task-log")).to_have_count(logs)
    ids = task.locator(".output > *").evaluate_all("els => els.map(e => e.id)")
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(words + logs))
    assert "".join(task.locator(".sse-task-out").all_text_contents()) == generated_text(words)


KINDS = ["htmx", "datastar"]


@pytest.mark.parametrize("kind", KINDS)
def test_live_progress_to_the_end_and_output_once(page: Page, site: Any, kind: str) -> None:
    server, hub, network = site(retry=200)
    page.goto(f"{server.url}/{kind}")
    task = start(page, "count", **{"Steps": 5, "Seconds between steps": 0.05})
    expect(task.locator(".sse-task-state")).to_have_text("succeeded")
    expect(task.locator("progress")).to_have_attribute("value", "100")
    task = start(page, "generate", **{"Words": 30, "Seconds between words": 0.01})
    expect(task.locator(".sse-task-state")).to_have_text("succeeded")
    check_output(task, 30)
    # Ended, and not reopened: htmx closes on `done` (sse-close), Datastar's request ends.
    until(lambda: hub.open_streams == 0)
    requests = network.stream_requests()
    page.wait_for_timeout(600)  # three times the retry interval: any reconnect would show
    assert network.stream_requests() == requests
    assert [status for _, _, status in requests] == [200, 200]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reload_mid_task_ends_exactly_right(page: Page, site: Any, kind: str) -> None:
    server, _, _ = site()
    page.goto(f"{server.url}/{kind}")
    task = start(page, "generate", **{"Words": 60, "Seconds between words": 0.02})
    expect(task.locator(".sse-task-out").nth(10)).to_be_attached()
    task_id = task.locator(".output").get_attribute("id").removeprefix("task-").removesuffix("-output")
    page.goto(f"{server.url}/{kind}?task={task_id}")  # a reload of the page showing the task
    task = page.locator("section.task")
    expect(task.locator(".sse-task-state")).to_have_text("succeeded")
    check_output(task, 60)


def test_htmx_survives_cut_streams_and_its_extensions_own_reconnect(page: Page, site: Any) -> None:
    server, hub, network = site(max_stream_lifetime=0.3, retry=50)
    network.refuse_resume = True
    page.goto(f"{server.url}/htmx")
    # 1.8 s of words: cut every 0.3 s, the refused resume and htmx's 0.5 s back-off fit well inside.
    task = start(page, "generate", **{"Words": 90, "Seconds between words": 0.02})
    expect(task.locator(".sse-task-state")).to_have_text("succeeded", timeout=15_000)
    check_output(task, 90)
    requests = network.stream_requests()
    refused = [i for i, (_, resume, status) in enumerate(requests) if status == 503]
    assert len(refused) == 1
    # EventSource's own reconnects send Last-Event-ID; after the refused one, htmx's
    # extension opened a new EventSource, which sends none: the whole output replaced.
    assert requests[refused[0] + 1][1] is None
    assert any(resume is not None and status == 200 for _, resume, status in requests)
    until(lambda: hub.open_streams == 0)


def test_datastar_resumes_a_cut_connection_with_its_last_event_id(page: Page, site: Any) -> None:
    server, hub, network = site()
    network.cut_after = 12
    page.goto(f"{server.url}/datastar")
    task = start(page, "generate", **{"Words": 40, "Seconds between words": 0.02})
    expect(task.locator(".sse-task-state")).to_have_text("succeeded", timeout=15_000)
    check_output(task, 40)
    requests = network.stream_requests()
    assert len(requests) >= 2 and requests[0][1] is None
    assert requests[1][1] is not None  # Datastar retried with the last event id it had
    until(lambda: hub.open_streams == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_task_text_is_inert(page: Page, site: Any, kind: str) -> None:
    server, _, _ = site()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server.url}/{kind}")
    response = page.request.post(f"{server.url}/tasks", data={"name": "hostile", "params": {}})
    assert response.status == 202
    page.goto(f"{server.url}/{kind}?task={response.json()['id']}")
    task = page.locator("section.task")
    expect(task.locator(".sse-task-state")).to_have_text("failed")
    expect(task.locator(".sse-task-out")).to_have_text(HOSTILE)
    expect(task.locator(".sse-task-log")).to_have_text(HOSTILE)
    expect(task.locator(".sse-task-message")).to_have_text(HOSTILE)
    expect(task.locator(".sse-task-error")).to_have_text(f"ValueError: {HOSTILE}")
    assert task.locator("script, img, b").count() == 0
    assert page.locator("#bold").count() == 0
    assert dialogs == []
