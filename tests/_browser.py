"""Headless Chromium for the page tests, driven by Playwright with the system's Chromium.

Importing this module skips the importing test module when Playwright or Chromium is
missing; the ``browser`` and ``page`` fixtures are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
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
