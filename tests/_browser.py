"""Headless Chromium for the page tests, driven by Playwright with the system's Chromium.

Importing this module skips the importing test module when Playwright or Chromium is
missing; the ``browser`` and ``page`` fixtures are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
Page = sync_api.Page
expect = sync_api.expect

#: Debian's Chromium: its headless shell when installed (the build Playwright itself runs
#: headless, without the full browser's own user interface: a third of its CPU), else the
#: browser in its headless mode.
CHROMIUM = (
    os.environ.get("SSE_TASKS_CHROMIUM")
    or shutil.which("chromium-headless-shell")
    or shutil.which("chromium")
    or "/usr/bin/chromium"
)
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"chromium is not installed at {CHROMIUM} "
        "(apt-get install chromium-headless-shell, or chromium; scripts/test does)",
        allow_module_level=True,
    )

CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def launched() -> Iterator[Any]:
    """A headless Chromium, closed afterwards."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@contextmanager
def checked_page(browser: Any, **context_options: Any) -> Iterator[Any]:
    """A page in a fresh context; fails the test if the page raised a JavaScript error."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def check_demo_page(page: Any, url: str, timeout: float) -> list[str]:
    """The demo page at ``url`` runs ``count`` and ``generate`` to their ends as a user
    does: the forms, the rows' state, progress bar, message, output, log and outcome
    (``timeout``: seconds for what waits on a worker). The ids of the two tasks."""
    from sse_tasks.demo import generated_text

    wait = timeout * 1000

    def start(name: str, **fields: Any) -> Any:
        for label, value in fields.items():
            page.get_by_label(label, exact=True).fill(str(value))
        page.get_by_role("button", name=f"Start {name}").click()
        row = page.locator("li.task", has=page.locator(".task-name", has_text=re.compile(f"^{name}$"))).first
        expect(row).to_be_visible()
        return row

    page.goto(url + "/")
    expect(page.locator("#connection")).to_have_text("Live", timeout=wait)
    row = start("count", **{"Steps": 4, "Seconds between steps": 0.05})
    ids = [row.locator(".task-id").inner_text()]
    expect(row.locator(".task-state")).to_have_text("succeeded", timeout=wait)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".task-message")).to_have_text("step 4 of 4")
    expect(row.locator(".task-outcome")).to_have_text('Result: {"count":4}')

    words = 25
    row = start("generate", Words=words, **{"Seconds between words": 0.01})
    ids.append(row.locator(".task-id").inner_text())
    expect(row.locator(".task-state")).to_have_text("succeeded", timeout=wait)
    box = row.locator(".task-output")
    expect(box).to_have_text(generated_text(words))
    assert box.text_content() == generated_text(words)  # every word once, in order
    expect(row.locator(".task-log li")).to_have_text(["10 of 25 words", "20 of 25 words"])
    expect(row.locator(".task-outcome")).to_have_text('Result: {"words":25}')
    return ids
