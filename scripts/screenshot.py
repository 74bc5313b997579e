"""Take docs/screenshot.png: the demo page of a real ``sse-tasks serve``, in headless Chromium.

    .venv/bin/python scripts/screenshot.py [--output docs/screenshot.png]

Starts ``sse-tasks serve`` (demo tasks, ``memory://``) on a free loopback port, opens
the page with Playwright and the system's Chromium ($SSE_TASKS_CHROMIUM, else
``chromium`` on PATH), starts a task of each kind from the page's own forms — a
finished count, a failed task, a cancelled sleep, a generation with its output and a
running count — and saves the page once each shows what it should.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT: ViewportSize = {"width": 1000, "height": 760}
WAIT_MS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo_server() -> Iterator[str]:
    """``sse-tasks serve`` on a free port until the block ends; yields its URL."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "sse-tasks"),
        "serve",
        "--port",
        str(port),
        "--log-level",
        "error",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("sse-tasks serve did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def start(page: Page, name: str, **fields: Any) -> Any:
    """Fill the task's form, start it, and return the newest row of that task."""
    form = page.locator(f'form[data-task="{name}"]')
    for label, value in fields.items():
        form.get_by_label(label, exact=True).fill(str(value))
    rows = page.locator("li.task", has=page.locator(".task-name", has_text=re.compile(f"^{name}$")))
    before = rows.count()
    form.get_by_role("button", name=f"Start {name}").click()
    expect(rows).to_have_count(before + 1, timeout=WAIT_MS)
    return rows.first


def take(url: str, output: Path, chromium: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url + "/")
        expect(page.locator("#connection")).to_have_text("Live", timeout=WAIT_MS)

        done = start(page, "count", **{"Steps": 5, "Seconds between steps": 0.1})
        expect(done.locator(".task-state")).to_have_text("succeeded", timeout=WAIT_MS)
        failed = start(page, "fail", **{"Error message": "could not reach the printer"})
        expect(failed.locator(".task-state")).to_have_text("failed", timeout=WAIT_MS)
        cancelled = start(page, "sleep", Seconds=60)
        expect(cancelled.locator(".task-state")).to_have_text("running", timeout=WAIT_MS)
        cancelled.get_by_role("button", name=re.compile("^Cancel")).click()
        expect(cancelled.locator(".task-state")).to_have_text("cancelled", timeout=WAIT_MS)
        generated = start(page, "generate", **{"Words": 30, "Seconds between words": 0.02})
        expect(generated.locator(".task-state")).to_have_text("succeeded", timeout=WAIT_MS)
        running = start(page, "count", **{"Steps": 20, "Seconds between steps": 0.5})
        expect(running.get_by_role("progressbar")).to_have_attribute(  # 30 % to 45 %
            "aria-valuenow", re.compile("^(3[0-9]|4[0-5])$"), timeout=WAIT_MS
        )

        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    chromium = os.environ.get("SSE_TASKS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise SystemExit(f"no Chromium at {chromium}: apt-get install chromium, or set SSE_TASKS_CHROMIUM")
    with demo_server() as url:
        take(url, args.output, chromium)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
