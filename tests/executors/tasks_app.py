"""The Celery app the Celery tests run in real worker processes.

Configured from the environment the worker fixture sets: ``SSE_TASKS_BROKER`` (the
hub's Redis, with its options) and ``CELERY_BROKER_URL``. No result backend: the
hook must work without one (``update_state`` included).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from _results import ODD_RESULTS
from celery import Celery
from celery.exceptions import Ignore

import sse_tasks.celery
from sse_tasks import TaskCancelled, current_task

app = Celery("sse_tasks_tests", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if os.environ.get("TASKS_APP_QUEUE"):  # a worker that consumes this queue instead of the default
    app.conf.task_default_queue = os.environ["TASKS_APP_QUEUE"]
hook = sse_tasks.celery.connect(
    app,
    os.environ.get("SSE_TASKS_BROKER", "redis://127.0.0.1:6379/0"),
    max_output_chunks=int(os.environ.get("TASKS_APP_MAX_OUTPUT_CHUNKS", "10000")),
)


@app.task(shared=False, name="add")
def add(a: int, b: int = 1) -> int:
    return a + b


@app.task(shared=False, name="fail")
def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@app.task(shared=False, name="exits")
def exits(code: int = 3) -> None:
    """Raises ``SystemExit``, which Celery lets through (a prefork child then exits)."""
    raise SystemExit(code)


@app.task(shared=False, name="steps")
def steps(n: int = 5, interval: float = 0.0, meta: bool = False) -> dict[str, int]:
    """Progress through our context (and metadata with ``meta``)."""
    task = current_task()
    for i in range(1, n + 1):
        if interval:
            time.sleep(interval)
        task.progress(i / n, f"step {i} of {n}")
        if meta:
            task.metadata(done=i, total=n)
    return {"n": n}


@app.task(shared=False, name="celery_progress", bind=True)
def celery_progress(self: Any, n: int = 4, interval: float = 0.0) -> str:
    """Progress the way celery-progress users report it."""
    for i in range(1, n + 1):
        if interval:
            time.sleep(interval)
        self.update_state(state="PROGRESS", meta={"current": i, "total": n, "description": f"{i}/{n}"})
    return "done"


@app.task(shared=False, name="celery_progress_steps", bind=True)
def celery_progress_steps(self: Any, marker: str, n: int = 1000, interval: float = 0.02) -> str:
    """``n`` steps reported only with ``update_state``; the file ``marker`` says how the
    loop ended (the exception's name, or ``done``) and at which step."""
    outcome, step = "done", 0
    try:
        for step in range(1, n + 1):
            time.sleep(interval)
            self.update_state(state="PROGRESS", meta={"current": step, "total": n})
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        Path(marker).write_text(f"{outcome} {step}")
    return "done"


@app.task(shared=False, name="ours_progress", bind=True)
def ours_progress(self: Any) -> None:
    """update_state with sse_tasks' own keys."""
    self.update_state(state="PROGRESS", meta={"progress": 0.25, "message": "a quarter"})
    time.sleep(0.3)


@app.task(shared=False, name="annotate", bind=True)
def annotate(self: Any) -> list[str]:
    """Metadata through the context and through update_state's other keys; bad values refused."""
    task = current_task()
    task.metadata(step=1, note="<script>x</script>")
    self.update_state(state="PROGRESS", meta={"progress": 0.5, "message": "half", "rows": 7, "step": 2})
    refused = []
    for bad in ({"nan": float("nan")}, {"big": "x" * 5000}, {"surrogate": "\ud800"}):
        try:
            task.metadata(**bad)
        except ValueError:
            refused.append(next(iter(bad)))
    try:
        self.update_state(state="PROGRESS", meta={"inf": float("inf")})
    except ValueError:
        refused.append("update_state")
    return refused


@app.task(shared=False, name="talk")
def talk(words: int = 5) -> int:
    task = current_task()
    for i in range(words):
        task.output(f"w{i} ")
    task.log("done talking", "warning")
    return words


@app.task(shared=False, name="flaky", bind=True, max_retries=2)
def flaky(self: Any) -> str:
    """Fails until its third attempt."""
    if self.request.retries < 2:
        raise self.retry(exc=RuntimeError("not yet"), countdown=0.1)
    return "third time"


@app.task(shared=False, name="odd")
def odd(kind: str) -> Any:
    """Returns the result of that kind in ``ODD_RESULTS``: not JSON."""
    return ODD_RESULTS[kind][0]()


@app.task(shared=False, name="wait")
def wait(seconds: float = 60.0, marker: str = "") -> str:
    """Sleeps, checking for a cancel; writes ``marker`` (a path) when it stops on one."""
    deadline = time.monotonic() + seconds
    task = current_task()
    try:
        while time.monotonic() < deadline:
            task.check()
            time.sleep(0.02)
    except TaskCancelled:
        if marker:
            Path(marker).write_text("stopped")
        raise
    return "waited"


@app.task(shared=False, name="sleepy")
def sleepy(seconds: float = 60.0) -> str:
    """Sleeps without ever checking (only terminate stops it)."""
    time.sleep(seconds)
    return "slept"


@app.task(shared=False, name="touch")
def touch(marker: str) -> str:
    """Writes ``marker`` (a path) as soon as it runs: proof that it ran."""
    Path(marker).write_text("ran")
    return "touched"


@app.task(shared=False, name="burst", bind=True)
def burst(self: Any, n: int = 1000, via: str = "context", quiet: bool = False, fail: bool = False) -> int:
    """Reports progress ``n`` times as fast as it can (``i/n``, "report i of n"), through our
    context or celery-progress's ``update_state``; then returns (or fails). ``quiet``: first
    waits, without reporting again, until the last report is stored (10 s at most)."""
    task = current_task()
    for i in range(1, n + 1):
        if via == "update_state":
            meta = {"current": i, "total": n, "description": f"report {i} of {n}"}
            self.update_state(state="PROGRESS", meta=meta)
        else:
            task.progress(i / n, f"report {i} of {n}")
    deadline = time.monotonic() + 10
    while quiet and not _stored_message(self.request.id, f"report {n} of {n}"):
        if time.monotonic() > deadline:
            raise RuntimeError("the last report was never published")
        time.sleep(0.01)
    if fail:
        raise RuntimeError("after the burst")
    return n


def _stored_message(task_id: str, message: str) -> bool:
    stored = hook.writer.get(task_id)
    return stored is not None and stored.message == message


@app.task(shared=False, name="racy")
def racy(reports: int = 300, marker: str = "") -> str:
    """Returns a third of the way through the reports a thread of its own makes through its
    context (progress and output), so the rest race the task's end; writes ``marker`` (a
    path) once the thread is done."""
    task = current_task()
    started = threading.Event()

    def report() -> None:
        try:
            for i in range(reports):
                task.progress(i / reports, f"late {i}")
                task.output(f"late {i}\n")
                if i == reports // 3:
                    started.set()
                time.sleep(0.001)
        finally:
            started.set()
            if marker:
                Path(marker).write_text("done")

    threading.Thread(target=report, daemon=True).start()
    started.wait(10)
    return "raced"


@app.task(shared=False, name="flaky_talk", bind=True, max_retries=1)
def flaky_talk(self: Any, words: int = 1) -> int:
    """Writes ``words`` chunks of output on each attempt ("attempt r.i "); retries once."""
    for i in range(words):
        current_task().output(f"attempt {self.request.retries}.{i} ")
    if self.request.retries < 1:
        raise self.retry(exc=RuntimeError("again"), countdown=0.1)
    return self.request.retries


@app.task(shared=False, name="ignored")
def ignored() -> None:
    """Tells Celery to ignore it (no outcome is recorded)."""
    raise Ignore()


@app.task(shared=False, name="replacing", bind=True)
def replacing(self: Any, a: int = 2) -> Any:
    """Replaces itself with ``add(a, 10)`` (the same task id goes on)."""
    raise self.replace(add.s(a, 10))


@app.task(shared=False, name="hog")
def hog(seconds: float) -> str:
    """Holds its worker thread for ``seconds``, reporting nothing."""
    time.sleep(seconds)
    return "held"


@app.task(shared=False, name="stubborn")
def stubborn(seconds: float = 60.0, marker: str = "") -> str:
    """Checks for a cancel inside ``except Exception: pass`` (which must not swallow it);
    writes ``marker`` (a path) when it stops, however it stops."""
    task = current_task()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                task.check()
            except Exception:
                pass
            time.sleep(0.02)
    finally:
        if marker:
            Path(marker).write_text("stopped")
    return "never cancelled"
