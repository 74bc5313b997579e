"""The publishing client, a process of its own: ``python -m benchmarks.publisher CONFIG``.

CONFIG is JSON: ``port``, ``system``, ``count`` publishes; ``rate`` publishes per second
(0: a closed loop on one keep-alive connection, the next sent when the previous answer
arrives) over ``connections`` keep-alive connections; ``timeout`` seconds in all.

It connects, prints ``ready``, waits for a line on stdin, publishes, and prints one
JSON line: when the first was sent, how many were answered, its own CPU time, how far
the paced publishes fell behind their schedule. Each publish carries
``ts=<time.monotonic_ns()>`` taken just before it is written, which the subscribers
(another process, the same clock) subtract from their receive time.

In a process of its own so its answers are not queued behind a thousand subscribers'
data in one event loop: with a closed loop that would hold every system to the
client's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

from . import client


def publish_request(system: str, i: int) -> tuple[str, bytes, bytes]:
    """(path, body, content type) of publish ``i``, stamped now."""
    if system.startswith("sse_tasks"):
        body = b'{"name":"fail","params":{"message":"ts=%d"}}' % time.monotonic_ns()
        return "/tasks", body, b"application/json"
    text = b"ts=%d i=%d " % (time.monotonic_ns(), i)
    return "/publish", text + b"x" * max(0, 100 - len(text)), b"text/plain"


#: Statuses of an accepted publish (nchan: 201 with subscribers, 202 without).
ACCEPTED = {200, 201, 202}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def publish(config: dict[str, Any]) -> dict[str, Any]:
    port, system, count = int(config["port"]), str(config["system"]), int(config["count"])
    rate, timeout = float(config.get("rate", 0)), float(config.get("timeout", 60))
    connections = 1 if rate <= 0 else max(1, int(config.get("connections", 4)))
    conns = [await client.connect(port) for _ in range(connections)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    sent = answered = failed = late = 0
    lag_max = 0
    answers: list[int] = []
    cpu0 = _cpu()
    first = time.monotonic_ns()
    deadline = time.monotonic() + timeout

    async def one(conn: client.Connection, i: int) -> None:
        nonlocal sent, answered, failed
        path, body, content_type = publish_request(system, i)
        start = time.monotonic_ns()
        sent += 1
        response = await conn.post(path, body, content_type)
        answers.append(time.monotonic_ns() - start)
        if client.status(response) in ACCEPTED:
            answered += 1
        else:
            failed += 1
            if failed == 1:
                print(f"publish refused: {response[:300]!r}", file=sys.stderr, flush=True)

    try:
        if rate <= 0:
            for i in range(count):
                if time.monotonic() > deadline:
                    break
                await asyncio.wait_for(one(conns[0], i), max(0.01, deadline - time.monotonic()))
        else:
            free: asyncio.Queue[client.Connection] = asyncio.Queue()
            for conn in conns:
                free.put_nowait(conn)
            running: set[asyncio.Task[None]] = set()

            async def paced(conn: client.Connection, i: int) -> None:
                try:
                    await one(conn, i)
                finally:
                    free.put_nowait(conn)

            for i in range(count):
                due = first + int(i * 1e9 / rate)
                wait = (due - time.monotonic_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
                conn = await asyncio.wait_for(free.get(), max(0.01, deadline - time.monotonic()))
                behind = time.monotonic_ns() - due
                lag_max = max(lag_max, behind)
                late += behind > 5_000_000
                task = asyncio.create_task(paced(conn, i))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running, timeout=max(0.01, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    finally:
        for conn in conns:
            conn.close()
    answers.sort()
    return {
        "sent": sent,
        "answered": answered,
        "failed": failed,
        "first_ns": first,
        "last_answer_ns": time.monotonic_ns(),
        "cpu_s": _cpu() - cpu0,
        "answer_p50_ms": answers[len(answers) // 2] / 1e6 if answers else float("nan"),
        "answer_p99_ms": answers[min(len(answers) - 1, int(0.99 * len(answers)))] / 1e6
        if answers
        else float("nan"),
        "lag_max_ms": lag_max / 1e6,
        "late": late,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    # The subscribers' process shares this CPU: a higher priority lets an answer be
    # read as soon as it arrives instead of after their next turn (root only).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(publish(config))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
