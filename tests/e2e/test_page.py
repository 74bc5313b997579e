"""The demo page in a real headless Chromium against a real uvicorn serving the demo app."""

from __future__ import annotations

import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _browser import Page, expect
from _support import ROOT, LiveServer, with_routes
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route

from sse_tasks import TaskHub
from sse_tasks.demo import generated_text, register_demo_tasks
from sse_tasks.demo.page import page_routes

ARTIFACTS = ROOT / "test-artifacts"

expect.set_options(timeout=10_000)


@pytest.fixture
def page_options() -> dict[str, Any]:
    return {"viewport": {"width": 1000, "height": 760}}


def demo_hub() -> TaskHub:
    hub = TaskHub("memory://", shutdown_grace=0.5)
    register_demo_tasks(hub)
    return hub


@pytest.fixture
def site(live_server: Callable[..., LiveServer]) -> LiveServer:
    """The demo app (API at the root, page at /), as ``sse-tasks serve`` runs it."""
    hub = demo_hub()
    return live_server(hub, with_routes(hub, page_routes()))


@pytest.fixture
def demo_site(make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]) -> LiveServer:
    """The demo app on the test's broker (``memory://`` and a real Redis)."""
    hub = make_hub(shutdown_grace=0.5)
    return live_server(hub, with_routes(hub, page_routes()))


def row_of(page: Page, name: str) -> Any:
    """The newest task row of ``name``."""
    return page.locator("li.task", has=page.locator(".task-name", has_text=re.compile(f"^{name}$"))).first


def start(page: Page, name: str, **fields: Any) -> Any:
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(str(value))
    page.get_by_role("button", name=f"Start {name}").click()
    row = row_of(page, name)
    expect(row).to_be_visible()
    return row


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#connection")).to_have_text("Live")


def test_count_reaches_100_percent_and_succeeds(page: Page, site: LiveServer) -> None:
    open_page(page, site.url + "/")
    row = start(page, "count", **{"Steps": 5, "Seconds between steps": 0.05})
    bar = row.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")
    expect(row.locator(".task-state")).to_have_text("succeeded")
    expect(row.locator(".task-percent")).to_have_text("100 %")
    expect(row.locator(".task-message")).to_have_text("step 5 of 5")
    expect(row.locator(".task-outcome")).to_have_text('Result: {"count":5}')
    expect(page.locator("#announcer")).to_contain_text("succeeded")
    expect(row.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()


def test_failure_shows_the_error(page: Page, site: LiveServer) -> None:
    open_page(page, site.url + "/")
    row = start(page, "fail", **{"Error message": "disk on fire"})
    expect(row.locator(".task-state")).to_have_text("failed")
    expect(row.locator(".task-outcome")).to_have_text("RuntimeError: disk on fire")


def test_cancel_a_sleep(page: Page, site: LiveServer) -> None:
    open_page(page, site.url + "/")
    row = start(page, "sleep", Seconds=60)
    expect(row.locator(".task-state")).to_have_text("running")
    row.get_by_role("button", name=re.compile("^Cancel sleep")).click()
    expect(row.locator(".task-state")).to_have_text("cancelled")
    expect(row.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()


def test_reload_mid_task_continues_without_duplicates(page: Page, site: LiveServer) -> None:
    open_page(page, site.url + "/")
    row = start(page, "count", **{"Steps": 15, "Seconds between steps": 0.1})
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d?$"))
    task_id = row.locator(".task-id").inner_text()

    page.reload()
    expect(page.locator("#connection")).to_have_text("Live")
    rows = page.locator(f'li.task[data-id="{task_id}"]')
    expect(rows).to_have_count(1)
    expect(rows.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(rows.locator(".task-state")).to_have_text("succeeded")
    expect(page.locator("li.task")).to_have_count(1)


def test_one_event_source_for_every_task_including_others(page: Page, site: LiveServer) -> None:
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/events" in request.url else None)
    open_page(page, site.url + "/")
    body = {"name": "count", "params": {"n": 3, "interval": 0.01}}
    ids = [httpx.post(site.url + "/tasks", json=body).json()["id"] for _ in range(3)]
    for task_id in ids:
        expect(page.locator(f'li.task[data-id="{task_id}"] .task-state')).to_have_text("succeeded")
    assert len(streams) == 1
    assert "last_event_id=" in streams[0]  # subscribed from the list's cursor


def test_backs_off_and_retries_when_the_stream_is_refused(page: Page, site: LiveServer) -> None:
    refused: list[str] = []

    def refuse_once(route: Any) -> None:
        if not refused:
            refused.append(route.request.url)
            route.fulfill(status=503, headers={"Retry-After": "1"}, body="busy")
        else:
            route.continue_()

    page.route(re.compile(r"/events(\?|$)"), refuse_once)
    page.goto(site.url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(page.locator("#connection")).to_have_text("Live")
    row = start(page, "count", **{"Steps": 3, "Seconds between steps": 0.01})
    expect(row.locator(".task-state")).to_have_text("succeeded")
    assert refused


def test_works_under_a_mount_prefix(page: Page, live_server: Callable[..., LiveServer]) -> None:
    hub = demo_hub()
    app = Starlette(routes=[Mount("/ops/jobs", routes=[*hub.routes, *page_routes()])], lifespan=hub.lifespan)
    server = live_server(hub, app)
    open_page(page, server.url + "/ops/jobs/")
    row = start(page, "count", **{"Steps": 2, "Seconds between steps": 0.01})
    expect(row.locator(".task-state")).to_have_text("succeeded")


def test_screenshot(page: Page, site: LiveServer) -> None:
    """A page with every kind of task, saved as test-artifacts/page.png."""
    open_page(page, site.url + "/")
    done = start(page, "count", **{"Steps": 5, "Seconds between steps": 0.1})
    expect(done.locator(".task-state")).to_have_text("succeeded")
    failed = start(page, "fail", **{"Error message": "could not reach the printer"})
    expect(failed.locator(".task-state")).to_have_text("failed")
    cancelled = start(page, "sleep", Seconds=60)
    expect(cancelled.locator(".task-state")).to_have_text("running")
    cancelled.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(cancelled.locator(".task-state")).to_have_text("cancelled")
    running = start(page, "count", **{"Steps": 10, "Seconds between steps": 0.5})
    expect(running.get_by_role("progressbar")).to_have_attribute("aria-valuenow", re.compile("^[1-9]"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
    assert (ARTIFACTS / "page.png").stat().st_size > 10_000


def test_the_embedding_example_follows_a_task(page: Page, live_server: Callable[..., LiveServer]) -> None:
    example = ROOT / "examples" / "embed.html"

    async def embed(request: Any) -> FileResponse:
        return FileResponse(example)

    hub = demo_hub()
    app = with_routes(hub, [Route("/embed.html", embed)])
    server = live_server(hub, app)
    page.goto(server.url + "/embed.html")
    page.get_by_role("button", name="Start a count").click()
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=15_000)
    expect(page.get_by_role("status")).to_contain_text('succeeded 100 % step 10 of 10 — result {"count":10}')


def test_a_cursor_the_server_cannot_resume_from_resets_the_list(page: Page, site: LiveServer) -> None:
    """``event: reset`` makes the page drop what it holds and take the snapshots that follow."""
    body = {"name": "count", "params": {"n": 2, "interval": 0.01}}
    task_id = httpx.post(site.url + "/tasks", json=body).json()["id"]
    stale = {
        "tasks": [
            {
                "id": "ghost",
                "name": "sleep",
                "state": "running",
                "progress": None,
                "message": None,
                "result": None,
                "error": None,
                "created_at": "2026-01-01T00:00:00.000000Z",
                "started_at": "2026-01-01T00:00:00.000000Z",
                "finished_at": None,
            }
        ],
        "cursor": "from-another-server-1",
    }
    page.route(re.compile(r"/tasks\?"), lambda route: route.fulfill(json=stale))
    page.goto(site.url + "/")
    expect(page.locator(f'li.task[data-id="{task_id}"] .task-state')).to_have_text("succeeded")
    expect(page.locator('li.task[data-id="ghost"]')).to_have_count(0)


WORDS = 60
GENERATE = {"Words": WORDS, "Seconds between words": 0.05}  # 3 s of output


def started_generation(page: Page, site: LiveServer) -> tuple[str, Any]:
    """Start ``generate`` from the form; once its first words are shown, its id and row."""
    row = start(page, "generate", **GENERATE)
    box = row.locator(".task-output")
    expect(box).to_contain_text(generated_text(3).strip())
    task_id = row.locator(".task-id").inner_text()
    snapshot = httpx.get(f"{site.url}/tasks/{task_id}").json()
    assert snapshot["state"] == "running", "the generation ended before the test could interrupt it"
    return task_id, row


def expect_the_whole_text_once(page: Page, task_id: str) -> None:
    row = page.locator(f'li.task[data-id="{task_id}"]')
    expect(row).to_have_count(1)
    expect(row.locator(".task-state")).to_have_text("succeeded")
    box = row.locator(".task-output")
    expect(box).to_have_text(generated_text(WORDS))
    assert box.text_content() == generated_text(WORDS)  # exact: no word twice, none missing
    log = row.locator(".task-log li")
    expect(log).to_have_text([f"{n} of {WORDS} words" for n in range(10, WORDS + 1, 10)])


def test_generate_streams_its_output_into_the_task_row(page: Page, demo_site: LiveServer) -> None:
    open_page(page, demo_site.url + "/")
    row = start(page, "generate", Words=25, **{"Seconds between words": 0.01})
    expect(row.locator(".task-state")).to_have_text("succeeded")
    expect(row.locator(".task-output")).to_have_text(generated_text(25))
    assert row.locator(".task-output").text_content() == generated_text(25)
    expect(row.locator(".task-log li")).to_have_text(["10 of 25 words", "20 of 25 words"])
    expect(row.locator(".task-outcome")).to_have_text('Result: {"words":25}')


def test_a_reload_mid_generation_shows_the_whole_text_once(page: Page, demo_site: LiveServer) -> None:
    open_page(page, demo_site.url + "/")
    task_id, _ = started_generation(page, demo_site)

    page.reload()

    expect(page.locator("#connection")).to_have_text("Live")
    expect_the_whole_text_once(page, task_id)


class CuttableProxy:
    """A TCP proxy on a loopback port in front of ``upstream``: ``cut()`` resets every
    connection through it and refuses new ones until ``restore()``, as a network does."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.down = False
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.connections += 1
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._open.discard(sock)
                _reset(sock)

    def cut(self) -> None:
        self.down = True
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _reset(sock: socket.socket) -> None:
    """Drop a connection: abortive close (SO_LINGER 0); the shutdown wakes the other
    thread blocked reading it (closing alone would leave the connection up)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def proxy(demo_site: LiveServer) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(demo_site.url)
    yield proxy
    proxy.close()


def test_a_connection_cut_mid_generation_ends_with_the_whole_text_once(
    page: Page, demo_site: LiveServer, proxy: CuttableProxy
) -> None:
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/events" in request.url else None)
    open_page(page, proxy.url + "/")
    task_id, row = started_generation(page, demo_site)
    shown = len(row.locator(".task-output").text_content() or "")
    before = len(streams)

    proxy.cut()
    expect(page.locator("#connection")).not_to_have_text("Live")
    assert len(row.locator(".task-output").text_content() or "") < len(generated_text(WORDS))
    proxy.restore()

    expect_the_whole_text_once(page, task_id)
    expect(page.locator("#connection")).to_have_text("Live")
    assert len(streams) > before  # the stream was opened again
    assert shown > 0
