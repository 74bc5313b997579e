"""Fan-out against the peers: ``python -m benchmarks.fanout [--quick] [--only closed,fanout,throughput]``.

- **closed**: 1,000 subscribers on ``/events``; 200 publishes from the client, each sent
  when the previous one's answer has arrived. sse_tasks: ``POST /tasks`` of the demo
  task ``fail`` with the publish time as its message, three events (``queued``,
  ``running``, ``failed``) to every subscriber; the peers: a 100-byte ``POST
  /publish``. Publishes/s until every subscriber has every final event; latency of
  the final event over every subscriber and publish; server CPU per delivery.
- **fanout**: 1,000 subscribers; a server-side publisher started by ``POST /tasks``
  (sse_tasks: a task reporting progress, rate limiting and coalescing off). *Paced*:
  40 messages 200 ms apart (one message's latency to every subscriber); *burst*: 200
  as fast as the publisher goes (messages/s and deliveries/s until the last
  subscriber has the end marker). Not nchan: it has no server-side publisher.
- **throughput**: 100 subscribers, a burst of 5,000 messages.

sse_tasks merges a progress report into the next when the hub has not published it
yet, so its bursts deliver fewer events than the peers': messages/s is the like-for-like
rate. Options: ``python -m benchmarks.fanout --help``; the systems: ``benchmarks/systems.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import client
from .harness import percentiles
from .systems import SERVER_PUBLISHER, Run, Scenario, Server, Target, redis_target
from .systems import main as compare

Chunks = list[tuple[int, int, int, int]]


async def burst(
    server: Server, run: Run, subscribers: int, messages: int, paced: tuple[int, float] = (0, 0.0)
) -> dict[str, Any]:
    """``subscribers`` streams on ``/events``; the server-side publisher emits ``messages``
    as fast as it can. With ``paced=(count, interval)`` a paced publisher runs first, one
    message every ``interval`` seconds, slow enough for every system to keep up: its
    latencies are the time one message takes to reach every subscriber, not the time a
    burst queues (its figures are prefixed ``paced_``)."""
    chunks: Chunks = []
    streams = await client.subscribe(
        server.port,
        subscribers,
        client.MESSAGE[server.system],
        client.END[server.system],
        on_match=lambda *chunk: chunks.append(chunk),
        timeout=run.timeout,
    )
    result: dict[str, Any] = {}
    try:
        await asyncio.sleep(run.settle)
        if paced[0]:
            slow = await _publish(server, streams, chunks, paced[0], paced[1], run.timeout)
            result.update({f"paced_{key}": v for key, v in slow.items()})
            chunks.clear()
        result.update(await _publish(server, streams, chunks, messages, 0.0, run.timeout))
    finally:
        await client.close_all(streams)
    return result


async def _publish(
    server: Server,
    streams: list[client.Subscriber],
    chunks: Chunks,
    messages: int,
    interval: float,
    timeout: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for stream in streams:
        stream.ended = loop.create_future()
    trigger = await client.connect(server.port)  # a fresh one: keep-alive ends after 5 s
    window = server.window()
    response = await trigger.post("/tasks", client.trigger(messages, interval))
    trigger.close()
    if client.status(response) != 202:
        raise RuntimeError(f"publish failed: {response[:300]!r}")
    await asyncio.wait([s.ended for s in streams], timeout=timeout)
    end = client.last_end(streams)
    measured = window.close(end)
    received = sum(count for count, *_ in chunks)
    return {
        "deliveries": received,
        "expected": len(streams) * messages,
        "complete": end is not None,
        # Messages published ÷ time until every subscriber had the last one: unlike
        # deliveries/s, not lowered when the hub merges a progress report into the next.
        "messages_per_s": messages / measured["seconds"],
        "deliveries_per_s": received / measured["seconds"],
        "server_us_per_delivery": 1e6 * measured["server_cpu"] / max(received, 1),
        **percentiles(client.latencies(chunks)),
        **measured,
    }


async def client_publishes(
    server: Server, run: Run, subscribers: int, publishes: int, rate: float = 0.0
) -> dict[str, Any]:
    """``subscribers`` streams on ``/events``; the client publishes ``publishes`` times, in
    a closed loop (``rate`` 0) or ``rate`` per second (``client.Publisher``). Each
    publish's final event (sse_tasks: ``task.failed``) carries its publish time; the
    measurement ends when every subscriber has every final event."""
    chunks: Chunks = []
    streams = await client.subscribe(
        server.port,
        subscribers,
        client.FINAL[server.system],
        on_match=lambda *chunk: chunks.append(chunk),
        timeout=run.timeout,
    )
    try:
        await asyncio.sleep(run.settle)
        for stream in streams:
            stream.expect(publishes)
        publisher = await client.Publisher.start(server.port, server.system, publishes, rate, run.timeout)
        try:
            window = server.window()
            report = await publisher.run(run.timeout)
        finally:
            await publisher.close()
        left = max(0.1, run.timeout - (time.monotonic_ns() - report["first_ns"]) / 1e9)
        await asyncio.wait([s.ended for s in streams], timeout=left)
        end = client.last_end(streams)
        measured = window.close(end, start_ns=report["first_ns"], other_client_cpu=report["cpu_s"])
    finally:
        await client.close_all(streams)
    received = sum(n for n, *_ in chunks)
    wall = measured["seconds"]
    return {
        "subscribers": subscribers,
        "publishes": report["answered"],
        "refused": report["failed"],
        "deliveries": received,
        "expected": subscribers * publishes,
        "complete": end is not None and report["answered"] == publishes,
        "publishes_per_s": report["answered"] / wall,
        "deliveries_per_s": received / wall,
        "server_us_per_delivery": 1e6 * measured["server_cpu"] / max(received, 1),
        **percentiles(client.latencies(chunks)),
        "answer_p50_ms": report["answer_p50_ms"],
        "answer_p99_ms": report["answer_p99_ms"],
        "publisher_lag_max_ms": report["lag_max_ms"],
        "publisher_late": report["late"],
        "publisher_cpu_pct": 100 * report["cpu_s"] / wall,
        **measured,
    }


CLOSED = Scenario(
    "closed",
    client_publishes,
    sizes={
        "full": {"subscribers": 1000, "publishes": 200},
        "quick": {"subscribers": 1000, "publishes": 100},
        "smoke": {"subscribers": 4, "publishes": 5},
    },
    rows=(
        ("publishes_per_s", "publishes/s", True),
        ("p50_ms", "final event latency p50 ms", False),
        ("p99_ms", "final event latency p99 ms", False),
        ("server_us_per_delivery", "server CPU µs/delivery", False),
    ),
    targets=(
        Target(
            "closed-loop fan-out ({subscribers} subscribers) ≥ 1.0x nchan publishes/s",
            "publishes_per_s",
            at_least=1.0,
            bottom="nchan",
        ),
        redis_target("redis closed-loop fan-out publishes/s ≥ 0.7x memory", "publishes_per_s", at_least=0.7),
    ),
)

_BURST_ROWS = (
    ("messages_per_s", "burst: messages/s", True),
    ("deliveries_per_s", "burst: deliveries/s", True),
    ("server_us_per_delivery", "burst: server CPU µs/delivery", False),
    ("p50_ms", "burst: latency p50 ms", False),
    ("p99_ms", "burst: latency p99 ms", False),
)

FANOUT = Scenario(
    "fanout",
    burst,
    sizes={
        "full": {"subscribers": 1000, "messages": 200, "paced": (40, 0.2)},
        "quick": {"subscribers": 300, "messages": 100, "paced": (20, 0.1)},
        "smoke": {"subscribers": 4, "messages": 5, "paced": (3, 0.01)},
    },
    rows=(
        *_BURST_ROWS,
        ("paced_p50_ms", "paced: latency p50 ms", False),
        ("paced_p99_ms", "paced: latency p99 ms", False),
        ("paced_server_us_per_delivery", "paced: server CPU µs/delivery", False),
    ),
    systems=SERVER_PUBLISHER,
    targets=(redis_target("redis burst fan-out messages/s ≥ 0.7x memory", "messages_per_s", at_least=0.7),),
)

THROUGHPUT = Scenario(
    "throughput",
    burst,
    sizes={
        "full": {"subscribers": 100, "messages": 5000},
        "quick": {"subscribers": 50, "messages": 1000},
        "smoke": {"subscribers": 3, "messages": 20},
    },
    rows=_BURST_ROWS,
    systems=SERVER_PUBLISHER,
    targets=(redis_target("redis throughput messages/s ≥ 0.7x memory", "messages_per_s", at_least=0.7),),
)

SCENARIOS = (CLOSED, FANOUT, THROUGHPUT)


def main(argv: list[str] | None = None) -> int:
    return compare(SCENARIOS, argv, "python -m benchmarks.fanout", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
