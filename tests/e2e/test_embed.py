"""examples/embed.html in a real headless Chromium, served from another origin than the hub.

Two real uvicorn servers on two loopback ports (two origins): one serves the page, the
other the hub, which allows the page's origin by CORS. The page learns where the hub is
from ``?hub=``, so every URL it uses (``POST …/tasks`` and the snapshot's root-relative
``links.events``) must be resolved against the hub, not against the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest
from _browser import Page, expect
from _support import ROOT, LiveServer, serve_in_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route

from sse_tasks import TaskHub
from sse_tasks.demo import generated_text, register_demo_tasks

EMBED = ROOT / "examples" / "embed.html"
WAIT_MS = 15_000  # a 1 s task on a busy machine
DONE = 'count: succeeded 100 % step 10 of 10 — result {"count":10}'


@pytest.fixture
def pages() -> Iterator[LiveServer]:
    """The page's own origin: a plain Starlette app that serves embed.html and nothing else."""

    async def embed(request: Request) -> FileResponse:
        return FileResponse(EMBED, media_type="text/html")

    with serve_in_thread(Starlette(routes=[Route("/embed.html", embed)])) as server:
        yield server


def start_hub(
    live_server: Callable[..., LiveServer], *, cors_origins: list[str], mount: str = ""
) -> tuple[LiveServer, str]:
    """A hub with the demo tasks on its own origin; returns the server and the hub's base URL."""
    hub = TaskHub("memory://", shutdown_grace=0.5, cors_origins=cors_origins)
    register_demo_tasks(hub)
    app = hub.app
    if mount:
        app = Starlette(routes=[Mount(mount, app=hub.app)], lifespan=hub.lifespan)
    server = live_server(hub, app)
    return server, server.url + mount


def open_embed(page: Page, pages: LiveServer, hub_url: str) -> None:
    page.goto(f"{pages.url}/embed.html?{urlencode({'hub': hub_url})}")
    page.get_by_role("button", name="Start a count").click()


@pytest.mark.parametrize("mount", ["", "/jobs"], ids=["at the root", "mounted under /jobs"])
def test_a_page_on_another_origin_follows_a_task_to_the_end(
    page: Page, pages: LiveServer, live_server: Callable[..., LiveServer], mount: str
) -> None:
    hub, hub_url = start_hub(live_server, cors_origins=[pages.url], mount=mount)
    assert hub.url != pages.url
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    open_embed(page, pages, hub_url)

    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)
    expect(page.get_by_role("status")).to_have_text(DONE, timeout=WAIT_MS)
    streams = [url for url in requests if url.endswith("/events")]
    assert len(streams) == 1
    assert re.fullmatch(re.escape(f"{hub.url}{mount}/tasks/") + r"[\w-]+/events", streams[0])
    assert not [url for url in requests if url.startswith(pages.url) and "/tasks" in url]


def test_a_refused_stream_is_reported_instead_of_waiting_forever(
    page: Page, pages: LiveServer, live_server: Callable[..., LiveServer]
) -> None:
    """An ``EventSource`` gives up for good on a non-200 answer: the page says so."""
    _, hub_url = start_hub(live_server, cors_origins=[pages.url])
    page.route(
        re.compile(r"/tasks/[\w-]+/events$"),
        lambda route: route.fulfill(
            status=503, headers={"Access-Control-Allow-Origin": pages.url, "Retry-After": "1"}, body="busy"
        ),
    )

    open_embed(page, pages, hub_url)

    expect(page.get_by_role("status")).to_have_text(
        re.compile(r"^Error: the task's event stream was refused \(.*/events\)$"), timeout=WAIT_MS
    )


def test_a_hub_that_does_not_allow_the_page_origin_is_reported(
    page: Page, pages: LiveServer, live_server: Callable[..., LiveServer]
) -> None:
    _, hub_url = start_hub(live_server, cors_origins=[])  # no CORS: the browser blocks the POST

    open_embed(page, pages, hub_url)

    expect(page.get_by_role("status")).to_have_text(
        f"Error: cannot reach the hub at {hub_url}/tasks: is it running, and does it allow this page's"
        " origin (CORS; the browser console says which)? If not, start the hub with"
        f" --cors-origin {pages.url}",
        timeout=WAIT_MS,
    )


def test_a_page_on_another_origin_shows_a_generation_s_output(
    page: Page, pages: LiveServer, live_server: Callable[..., LiveServer], make_hub: Callable[..., TaskHub]
) -> None:
    """The page imports the browser module from the hub and streams the task's output."""
    hub = make_hub(shutdown_grace=0.5, cors_origins=[pages.url])
    app = Starlette(routes=[Mount("/jobs", app=hub.app)], lifespan=hub.lifespan)
    server = live_server(hub, app)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.goto(f"{pages.url}/embed.html?{urlencode({'hub': server.url + '/jobs'})}")
    page.get_by_role("button", name="Start a generation").click()

    expect(page.get_by_role("status")).to_have_text(
        'generate: succeeded 100 %  — result {"words":40}', timeout=WAIT_MS
    )
    output = page.get_by_role("log", name="Output")
    expect(output).to_have_text(generated_text(40), timeout=WAIT_MS)
    assert output.text_content() == generated_text(40)
    assert f"{server.url}/jobs/sse-tasks.js" in requests
