"""Take docs/dashboard.png: the dashboard of a real ``sse-tasks serve --dashboard``.

    .venv/bin/python scripts/dashboard_screenshot.py [--output docs/dashboard.png]

Starts ``sse-tasks serve --dashboard`` (demo tasks, ``memory://``) on a free loopback
port, submits a mix of tasks over HTTP (finished, failed, cancelled, running, one with
output), opens ``/dashboard`` at 1280x800 in headless Chromium, opens the generating
task's detail and saves the page once its output is in.
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
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def submit(url: str, name: str, **params: object) -> str:
    answer = httpx.post(f"{url}/tasks", json={"name": name, "params": params}, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    chromium = os.environ.get("SSE_TASKS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sse_tasks = str(Path(sys.executable).parent / "sse-tasks")
    command = [sse_tasks, "serve", "--dashboard", "--port", str(port), "--log-level", "error"]
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
        for i in range(24):
            submit(url, "count", n=3 + i % 5, interval=0.02)
        for message in ("could not reach the printer", "disk full", "timeout talking to the bank"):
            submit(url, "fail", message=message)
        cancelled = submit(url, "sleep", seconds=60)
        httpx.delete(f"{url}/tasks/{cancelled}", timeout=10)
        for _ in range(2):
            submit(url, "count", n=100, interval=0.3)
        words = submit(url, "generate", words=60, delay=0.01)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/dashboard")
            expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
            expect(page.locator("#count-failed")).to_have_text("3", timeout=WAIT_MS)
            page.locator(f'#rows .row[data-id="{words}"]').click()
            expect(page.locator("#d-facts")).to_contain_text("succeeded", timeout=WAIT_MS)
            expect(page.locator("#d-output")).to_contain_text("[info]", timeout=WAIT_MS)
            done = re.compile(r"Last hour: [1-9][0-9]* succeeded")
            expect(page.locator("#chart-done")).to_have_attribute("aria-label", done, timeout=WAIT_MS)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
