"""Task output to many followers: ``python -m benchmarks.output_fanout [--words N] [--followers F]``.

One sse_tasks server (``memory://``; ``--redis``: on a redis-server of its own, whose
CPU and memory count as the server's) runs the demo task ``generate`` with
``delay=0``: N words, and a log line every 10. F followers on ``/events?output=1``,
attached before it starts, must each receive every chunk exactly once and in order,
which is checked chunk by chunk. The per-task output bound is raised for the run
(``python -m benchmarks.apps --output-bound``). Words delivered per second, server
CPU µs per word delivered, the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

from . import client, harness
from .systems import Server

SIZES = {"full": (100_000, 100), "quick": (20_000, 100), "smoke": (50, 2)}  # (words, followers)
_SEQ = re.compile(rb'"seq":(\d+),"kind":"(output|log)"')


class Follower(client.Frames):
    """A ``/events?output=1`` stream checking that chunks 0 to ``total`` - 1 arrive in order."""

    def __init__(self, total: int) -> None:
        super().__init__("/events?output=1&name=generate")
        self.total, self.next = total, 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def frames(self, frames: bytes, now: int) -> None:
        for match in _SEQ.finditer(frames):
            if int(match.group(1)) != self.next and not self.done.done():
                self.done.set_exception(AssertionError(f"expected chunk {self.next}, got {match.group(1)!r}"))
            self.next += 1
        if self.next == self.total and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"/events closed: {exc}"))


async def measure(words: int, followers: int, system: str, cpu: int | None) -> dict[str, Any]:
    with Server(system, cpu, options=["--output-bound"]) as server:
        loop = asyncio.get_running_loop()
        total = words + words // 10  # the words and a log line every 10
        streams: list[Follower] = []
        try:
            for _ in range(followers):
                _, stream = await loop.create_connection(lambda: Follower(total), "127.0.0.1", server.port)
                streams.append(stream)
            await asyncio.wait_for(asyncio.gather(*(s.opened for s in streams)), 60)  # all open first
            body = json.dumps({"name": "generate", "params": {"words": words, "delay": 0}}).encode()
            conn = await client.connect(server.port)
            cpu0, start = server.cpu(), time.perf_counter()
            response = await conn.post("/tasks", body)
            conn.close()
            if client.status(response) != 202:
                raise RuntimeError(f"submit failed: {response[:300]!r}")
            await asyncio.wait_for(asyncio.gather(*(s.done for s in streams)), 600)
            elapsed, used = time.perf_counter() - start, server.cpu() - cpu0
        finally:
            for stream in streams:
                stream.close()
        delivered = words * followers
        return {
            "system": system,
            "words": words,
            "followers": followers,
            "chunks_per_follower": total,
            "seconds": round(elapsed, 2),
            "words_delivered_per_s": round(delivered / elapsed),
            "server_cpu_us_per_word_delivered": round(used / delivered * 1e6, 2),
            "server_peak_rss_mib": round(server.rss("VmHWM") / 2**20, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.output_fanout", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=None)
    parser.add_argument("--words", type=int, help=f"default {SIZES['full'][0]:,}")
    parser.add_argument("--followers", type=int, help=f"default {SIZES['full'][1]}")
    parser.add_argument("--redis", action="store_true", help="on redis:// (a redis-server of its own)")
    args = parser.parse_args(argv)
    words, followers = SIZES[harness.level(args)]
    env = harness.environment(harness.versions(harness.PACKAGES))
    system = "sse_tasks+redis" if args.redis else "sse_tasks"
    result = harness.run_async(
        measure(args.words or words, args.followers or followers, system, harness.pin_client(not args.no_pin))
    )
    print(json.dumps(result))
    harness.write_json(args.json, {"environment": env, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
