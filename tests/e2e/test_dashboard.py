"""The operations page at /dashboard in a real Chromium against a real uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _browser import Page, expect
from _support import LiveServer

from sse_tasks import Access, TaskContext, TaskHub

expect.set_options(timeout=15_000)

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"><b id=bold>\'"'


def submit(server: LiveServer, name: str, **params: Any) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/tasks", json={"name": name, "params": params}, timeout=10)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def served(
    make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer], **options: Any
) -> LiveServer:
    hub = make_hub(dashboard=True, **options)
    return live_server(hub)


def test_counts_rows_filters_detail_and_cancel_live(
    page: Page, make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]
) -> None:
    server = served(make_hub, live_server)
    done = submit(server, "sleep", seconds=0)
    page.goto(f"{server.url}/dashboard")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#count-succeeded")).to_have_text("1")
    # Without a reload: a new failure and a new long task appear, counted and listed.
    failed = submit(server, "fail", message="no luck")
    long = submit(server, "count", n=1000, interval=0.05)
    expect(page.locator("#count-failed")).to_have_text("1")
    expect(page.locator("#count-running")).to_have_text("1")
    expect(page.locator("#rows .row")).to_have_count(3)
    expect(page.locator("#rows .row").first).to_contain_text(long["id"])  # newest first
    # Filters and search.
    page.select_option("#f-state", "failed")
    expect(page.locator("#rows .row")).to_have_count(1)
    expect(page.locator("#rows .row")).to_contain_text(failed["id"])
    page.select_option("#f-state", "")
    page.fill("#f-name", "sleep")
    expect(page.locator("#rows .row")).to_have_count(1)
    expect(page.locator("#rows .row")).to_contain_text(done["id"])
    page.fill("#f-name", "")
    page.fill("#f-id", long["id"][-8:])
    expect(page.locator("#rows .row")).to_have_count(1)
    page.fill("#f-id", "")
    expect(page.locator("#rows .row")).to_have_count(3)
    # Detail streams output live; cancel works.
    words = submit(server, "generate", words=40, delay=0.02)
    page.locator(f'#rows .row[data-id="{words["id"]}"]').click()
    expect(page.locator("#d-title")).to_contain_text(words["id"])
    expect(page.locator("#d-output")).to_contain_text("[info]", timeout=15_000)
    expect(page.locator("#d-facts")).to_contain_text("succeeded")
    page.locator(f'#rows .row[data-id="{long["id"]}"]').click()
    expect(page.locator("#d-cancel")).to_be_enabled()
    page.click("#d-cancel")
    expect(page.locator("#count-cancelled")).to_have_text("1")
    expect(page.locator("#count-running")).to_have_text("0")
    assert httpx.get(f"{server.url}/tasks/{long['id']}", timeout=10).json()["state"] == "cancelled"


def test_a_cut_stream_recovers_every_change(
    page: Page, make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]
) -> None:
    server = served(make_hub, live_server, max_stream_lifetime=0.5)
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/events" in request.url else None)
    page.goto(f"{server.url}/dashboard")
    expect(page.locator("#status")).to_have_text("live")
    ids = [submit(server, "sleep", seconds=0.3)["id"] for _ in range(12)]
    ids += [submit(server, "fail")["id"] for _ in range(5)]
    expect(page.locator("#count-succeeded")).to_have_text("12")
    expect(page.locator("#count-failed")).to_have_text("5")
    expect(page.locator("#count-all")).to_have_text(str(len(ids)))
    expect(page.locator("#count-running")).to_have_text("0")
    expect(page.locator("#count-queued")).to_have_text("0")
    assert len(streams) >= 2, streams  # the hub ended the stream at least once meanwhile


def test_hostile_strings_render_as_text(
    page: Page, make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]
) -> None:
    hub = make_hub(dashboard=True)

    @hub.task(name=HOSTILE)
    async def hostile(ctx: TaskContext) -> dict[str, str]:
        ctx.progress(0.5, HOSTILE)
        ctx.output(HOSTILE)
        raise RuntimeError(HOSTILE)

    server = live_server(hub)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    task = submit(server, HOSTILE)
    page.goto(f"{server.url}/dashboard")
    expect(page.locator("#count-failed")).to_have_text("1")
    row = page.locator(f'#rows .row[data-id="{task["id"]}"]')
    expect(row).to_contain_text(HOSTILE)
    row.click()
    expect(page.locator("#d-title")).to_contain_text(HOSTILE)
    expect(page.locator("#d-result")).to_contain_text(HOSTILE)
    expect(page.locator("#d-output")).to_contain_text(HOSTILE)
    assert page.locator("#bold").count() == 0
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


def test_the_operator_check_refuses_and_the_page_shows_nothing(
    page: Page, make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer]
) -> None:
    asked: list[str] = []

    def authorize(access: Access) -> bool:
        asked.append(access.action)
        if access.action == "operate":
            return access.request.headers.get("x-operator") == "yes"
        return True

    server = served(make_hub, live_server, authorize=authorize)
    task = submit(server, "sleep", seconds=0)
    answer = page.goto(f"{server.url}/dashboard")
    assert answer is not None and answer.status == 403
    assert task["id"] not in page.content()
    assert "operate" in asked
    allowed = httpx.get(f"{server.url}/dashboard", headers={"x-operator": "yes"}, timeout=10)
    assert allowed.status_code == 200 and "dashboard.js" not in allowed.text
    assert allowed.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("options", [{}, {"tokens": "a-secret-of-16-bytes-or-more"}])
def test_off_by_default_and_closed_with_tokens_alone(
    make_hub: Callable[..., TaskHub], live_server: Callable[..., LiveServer], options: dict[str, Any]
) -> None:
    hub = make_hub(**options, dashboard=bool(options))
    server = live_server(hub)
    status = httpx.get(f"{server.url}/dashboard", timeout=10).status_code
    assert status == (403 if options else 404)


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 800}])
def test_fits_the_screen_and_passes_a_tag_filter_to_the_hub(
    page: Page,
    make_hub: Callable[..., TaskHub],
    live_server: Callable[..., LiveServer],
    viewport: dict[str, int],
) -> None:
    server = served(make_hub, live_server)
    for _ in range(3):
        submit(server, "count", n=2, interval=0.01)
    page.set_viewport_size(viewport)
    page.goto(f"{server.url}/dashboard")
    expect(page.locator("#count-succeeded")).to_have_text("3")
    expect(page.get_by_role("table", name="Tasks, newest first")).to_be_visible()
    expect(page.get_by_role("combobox", name="State", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    for row in page.locator("#rows .row").all():
        box = row.bounding_box()
        assert box is not None and box["x"] + box["width"] <= viewport["width"]
    with page.expect_request(lambda request: "/tasks?" in request.url and "tag=user%3A42" in request.url):
        page.fill("#f-tag", "user:42")
        page.press("#f-tag", "Enter")
