"""Submitting against the peers: ``python -m benchmarks.submit [--quick] [--only submit,latency]``.

- **submit**: 32 keep-alive connections POSTing back to back for 3 s: ``POST /tasks``
  of a no-op task on sse_tasks (``memory://`` and ``redis://``), against a bare
  Starlette JSON endpoint (``POST /bare``) on the same sse_tasks server
  (``sse_tasks:bare``) and on the sse-starlette app. Answers per second, and per
  second of server CPU (what one fully available core would answer).
- **latency**: one at a time, from sending ``POST /tasks`` to a follower on
  ``/events`` seeing its end: sse_tasks a no-op task's ``task.succeeded``, the peers
  the one message their publisher sends. Not nchan (no server-side publisher).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import client
from .harness import percentiles
from .systems import SERVER_PUBLISHER, Results, Run, Scenario, Server, Target, between
from .systems import main as compare

NOOP = b'{"name": "noop", "params": {}}'


async def answers(server: Server, run: Run, connections: int, seconds: float, path: str) -> dict[str, Any]:
    """``connections`` keep-alive clients POSTing a no-op task to ``path`` back to back for
    ``seconds``, after a warm-up of up to 0.5 s."""
    conns = [await client.connect(server.port) for _ in range(connections)]
    answered = failed = 0
    counting = False

    async def worker(conn: client.Connection, until: float) -> None:
        nonlocal answered, failed
        while time.monotonic() < until:
            response = await conn.post(path, NOOP)
            if not counting:
                continue
            if client.status(response) == 202:
                answered += 1
            else:
                failed += 1

    try:
        warmup = time.monotonic() + min(0.5, seconds / 3)
        await asyncio.gather(*(worker(c, warmup) for c in conns))
        counting = True
        window = server.window()
        await asyncio.gather(*(worker(c, time.monotonic() + seconds) for c in conns))
        measured = window.close()
    finally:
        for conn in conns:
            conn.close()
    return {
        "answers_per_s": answered / measured["seconds"],
        # Contention-proof: what one fully available core would answer.
        "answers_per_cpu_s": answered / max(measured["server_cpu"], 1e-9),
        "failed": failed,
        **measured,
    }


async def to_terminal(server: Server, run: Run, tasks: int) -> dict[str, Any]:
    """``tasks`` times, one at a time: from sending ``POST /tasks`` to a follower seeing its end."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[int] | None = None

    def on_match(count: int, first: int, last: int, now: int) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    ours = server.system.startswith("sse_tasks")
    terminal = client.END[server.system] if ours else b"event: tick\n"
    (follower,) = await client.subscribe(server.port, 1, terminal, on_match=on_match, timeout=run.timeout)
    conn = await client.connect(server.port)
    samples: list[int] = []
    body = NOOP if ours else client.trigger(1)
    try:
        window = server.window()
        for _ in range(tasks):
            waiter = loop.create_future()
            start = time.monotonic_ns()
            response = await conn.post("/tasks", body)
            if client.status(response) != 202:
                raise RuntimeError(f"submit failed: {response[:300]!r}")
            samples.append(await asyncio.wait_for(waiter, run.timeout) - start)
        measured = window.close()
    finally:
        conn.close()
        await client.close_all([follower])
    return {"tasks": len(samples), **percentiles(samples), **measured}


def _same_server(result: Results) -> list[str]:
    if "sse_tasks:bare" not in result or "sse_tasks" not in result:
        return []
    per_s = between(result, "answers_per_s", "sse_tasks", "sse_tasks:bare")
    per_cpu = between(result, "answers_per_cpu_s", "sse_tasks", "sse_tasks:bare")
    return [
        f"sse_tasks POST /tasks ÷ POST /bare on the same server: {per_s:.2f}x answers/s, "
        f"{per_cpu:.2f}x per server CPU second"
    ]


SUBMIT = Scenario(
    "submit",
    answers,
    sizes={
        "full": {"connections": 32, "seconds": 3.0},
        "quick": {"connections": 16, "seconds": 1.5},
        "smoke": {"connections": 2, "seconds": 0.1},
    },
    rows=(
        ("answers_per_s", "answers/s (sse_tasks: /tasks)", True),
        ("answers_per_cpu_s", "answers per server CPU second", True),
    ),
    systems=("sse_tasks", "sse_tasks+redis", "sse-starlette"),
    variants={
        "sse_tasks": {"": {"path": "/tasks"}, "bare": {"path": "/bare"}},
        "sse_tasks+redis": {"": {"path": "/tasks"}},
        "sse-starlette": {"": {"path": "/bare"}},
    },
    targets=(
        Target(
            "submit ≥ 0.7x a bare Starlette endpoint (same server)",
            "answers_per_s",
            at_least=0.7,
            bottom="sse_tasks:bare",
        ),
    ),
    notes=_same_server,
)

LATENCY = Scenario(
    "latency",
    to_terminal,
    sizes={"full": {"tasks": 200}, "quick": {"tasks": 50}, "smoke": {"tasks": 3}},
    rows=(("p50_ms", "POST→terminal p50 ms", False), ("p99_ms", "POST→terminal p99 ms", False)),
    systems=SERVER_PUBLISHER,
)

SCENARIOS = (SUBMIT, LATENCY)


def main(argv: list[str] | None = None) -> int:
    return compare(SCENARIOS, argv, "python -m benchmarks.submit", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
