"""Light load against the peers: ``python -m benchmarks.light [--quick]``.

100 subscribers on ``/events``; the client publishes 100 times a second for 5 s over
4 keep-alive connections (what a publish is per system: ``benchmarks/fanout.py``,
*closed*). Latency p50/p99 of each publish's final event over every subscriber, and
the server's CPU in % of a core (with its redis-server on ``redis://``). A publish
sent more than 5 ms after its slot is counted and printed: one stall of a busy
machine lands on every subscriber at once and makes the p99.
"""

from __future__ import annotations

from typing import Any

from .fanout import client_publishes
from .systems import Run, Scenario, Server, Target, redis_target
from .systems import main as compare


async def paced(server: Server, run: Run, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    """``rate`` publishes a second for ``seconds`` to ``subscribers`` streams."""
    return await client_publishes(server, run, subscribers, max(1, round(rate * seconds)), rate)


LIGHT = Scenario(
    "light",
    paced,
    sizes={
        "full": {"subscribers": 100, "rate": 100.0, "seconds": 5.0},
        "quick": {"subscribers": 100, "rate": 100.0, "seconds": 2.0},
        "smoke": {"subscribers": 3, "rate": 50.0, "seconds": 0.1},
    },
    rows=(
        ("p50_ms", "final event latency p50 ms", False),
        ("p99_ms", "final event latency p99 ms", False),
        ("server_cpu_pct", "server CPU % of a core", False),
    ),
    targets=(
        Target("light-load p99 ≤ aiohttp-sse's", "p99_ms", at_most=1.0, bottom="aiohttp-sse"),
        redis_target("redis light-load server CPU ≤ 1.5x memory", "server_cpu_pct", at_most=1.5),
        redis_target("redis light-load p99 ≤ 2x memory", "p99_ms", at_most=2.0),
    ),
)

SCENARIOS = (LIGHT,)


def main(argv: list[str] | None = None) -> int:
    return compare(SCENARIOS, argv, "python -m benchmarks.light", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
