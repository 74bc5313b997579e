"""The dashboard in Chromium: ``python -m benchmarks.dashboard [--smoke] [--json PATH]``.

A hub (``memory://``, ``dashboard=True``, the demo tasks) under uvicorn in this process
retains ``--history`` finished tasks (10,000); headless Chromium (Playwright, the
system's Chromium) then opens ``/dashboard`` at 1280x800 and we measure:

- **first paint**: from navigation to the table's first rows and the counts of the
  first page (``GET /tasks?limit=1000``), and the time to load the rest of the history
  with "Load older";
- **main-thread busy share under load**: while ``--rate`` state changes per second
  (``sleep`` tasks of 0 s: queued, running, succeeded — three changes each) run for
  ``--seconds``, Chromium's own count of the page's main-thread task time
  (``Performance.getMetrics``' ``TaskDuration``, over the DevTools protocol) divided by
  the wall time, and the long tasks (> 50 ms) a ``PerformanceObserver`` saw.

``--smoke`` runs it at a tiny scale (nothing meaningful is timed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from sse_tasks import TaskHub
from sse_tasks.demo import register_demo_tasks

from .ports import free_port

CHROMIUM = (
    os.environ.get("SSE_TASKS_CHROMIUM")
    or shutil.which("chromium-headless-shell")
    or shutil.which("chromium")
    or "/usr/bin/chromium"
)
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


class Counter:
    """Counts runs; :meth:`wait` returns once there were that many (a little after the last
    run's return its snapshot is published, which the page's expectations wait for)."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Condition()

    async def add(self) -> None:
        async with self.changed:
            self.count += 1
            self.changed.notify_all()

    async def wait(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.count >= count)


class Served:
    """The hub under uvicorn in a thread; :meth:`call` runs a coroutine on its loop."""

    def __init__(self, history: int) -> None:
        keep = max(history * 2, 10_000)
        self.hub = TaskHub("memory://", dashboard=True, max_tasks=keep, history=keep, max_queued=keep)
        register_demo_tasks(self.hub)
        self.filled = Counter()
        filled = self.filled

        @self.hub.task(name="filler")
        async def filler() -> None:
            await filled.add()

        self.port = free_port()
        config = uvicorn.Config(self.hub.app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.server.serve())

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the hub did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coroutine: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def fill(self, count: int) -> None:
        """``count`` finished tasks in the history (in batches, so the queue keeps up)."""
        for start in range(0, count, 500):
            batch = [self.hub.submit("filler") for _ in range(min(500, count - start))]
            await asyncio.gather(*batch)
        await self.filled.wait(count)

    async def churn(self, rate: float, seconds: float) -> int:
        """``rate`` state changes per second for ``seconds`` (three per ``sleep`` task)."""
        per_second = rate / 3
        started = time.monotonic()
        submitted = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * per_second) + 1
            while submitted < due:
                await self.hub.submit("sleep", seconds=0)
                submitted += 1
            await asyncio.sleep(0.005)
        return submitted


def measure(history: int, rate: float, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    result: dict[str, Any] = {"history": history, "rate": rate, "seconds": seconds}
    with Served(history) as served:
        started = time.monotonic()
        served.call(served.fill(history))
        result["fill_s"] = round(time.monotonic() - started, 2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.add_init_script(LONG_TASKS)
            first_page = str(min(history, 1000))
            started = time.monotonic()
            page.goto(f"{served.url}/dashboard")
            expect(page.locator("#count-all")).to_have_text(first_page, timeout=60_000)
            expect(page.locator("#rows .row").first).to_be_visible()
            result["first_paint_ms"] = round((time.monotonic() - started) * 1000)
            started = time.monotonic()
            older = page.locator("#older")
            while older.is_visible():
                older.click()
                page.wait_for_function("() => !document.getElementById('older').disabled")
            expect(page.locator("#count-all")).to_have_text(str(history), timeout=60_000)
            result["all_history_ms"] = round((time.monotonic() - started) * 1000)
            result["rendered_rows"] = page.locator("#rows .row").count()

            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def task_seconds() -> float:
                metrics = cdp.send("Performance.getMetrics")["metrics"]
                return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))

            page.evaluate("window.__longTasks.length = 0")
            busy_before, wall_before = task_seconds(), time.monotonic()
            submitted = served.call(served.churn(rate, seconds))
            total = history + submitted
            expect(page.locator("#count-succeeded")).to_have_text(str(total), timeout=60_000)
            busy, wall = task_seconds() - busy_before, time.monotonic() - wall_before
            long_tasks = page.evaluate("window.__longTasks")
            result.update(
                changes_per_s=round(submitted * 3 / seconds, 1),
                busy_share=round(busy / wall, 3),
                long_tasks=len(long_tasks),
                longest_task_ms=round(max(long_tasks, default=0.0)),
                page_js_heap_mib=round(page.evaluate("performance.memory.usedJSHeapSize") / 2**20, 1),
            )
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run (the test suite's)")
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="state changes per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.history, args.rate, args.seconds = 30, 30.0, 0.5
    result = measure(args.history, args.rate, args.seconds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
