"""Task output to many followers: ``python -m benchmarks.output_fanout [--words N] [--followers F]``.

One sse_tasks server process (memory://, or ``--broker redis://…``), pinned to CPU 0,
runs the demo task ``generate`` with ``delay=0``; F followers on ``/events?output=1``
(attached before it starts, this process, CPU 1) must each receive every word exactly
once and in order, which is checked chunk by chunk. Prints words delivered per second,
server CPU µs per word delivered, and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

_SEQ = re.compile(rb'"seq":(\d+),"kind":"(output|log)"')
_CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVER = """
import os, sys, uvicorn
from sse_tasks import TaskHub
from sse_tasks.demo import register_demo_tasks
os.sched_setaffinity(0, {0})
hub = TaskHub(sys.argv[2], progress_interval=0, max_output_chunks=1 << 22, max_output_bytes=1 << 28,
              coalesce_after=1 << 30, max_streams=1 << 20, history=50_000)
register_demo_tasks(hub)
uvicorn.run(hub.app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
"""


class Follower(asyncio.Protocol):
    def __init__(self, total: int, done: asyncio.Future[None], opened: asyncio.Future[None]) -> None:
        self.total, self.done, self.opened = total, done, opened
        self.next = 0
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        if not self.opened.done() and b"retry: " in data:
            self.opened.set_result(None)
        data = self.buffer + data
        cut = data.rfind(b"\n\n") + 2  # whole frames only
        frames, self.buffer = data[:cut], data[cut:]
        for match in _SEQ.finditer(frames):
            seq = int(match.group(1))
            if seq != self.next:
                self.done.set_exception(AssertionError(f"expected chunk {self.next}, got {seq}"))
                return
            self.next += 1
        if self.next == self.total and not self.done.done():
            self.done.set_result(None)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def run(words: int, followers: int, broker: str) -> dict[str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), broker])  # noqa: ASYNC220 - once, before timing
    try:
        os.sched_setaffinity(0, {1})
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        total = words + words // 10  # the words and a log line every 10
        dones, opened = [], []
        for _ in range(followers):
            done: asyncio.Future[None] = loop.create_future()
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda d=done, r=ready: Follower(total, d, r), "127.0.0.1", port
            )
            transport.write(b"GET /events?output=1&name=generate HTTP/1.1\r\nHost: b\r\n\r\n")
            dones.append(done)
            opened.append(ready)
        await asyncio.wait_for(asyncio.gather(*opened), timeout=60)  # every stream open first
        body = json.dumps({"name": "generate", "params": {"words": words, "delay": 0}}).encode()
        cpu0, start = cpu_seconds(server.pid), time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /tasks HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await asyncio.wait_for(asyncio.gather(*dones), timeout=600)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(server.pid) - cpu0
        writer.close()
        delivered = words * followers
        return {
            "words": words,
            "followers": followers,
            "seconds": round(elapsed, 2),
            "words_delivered_per_s": round(delivered / elapsed),
            "server_cpu_us_per_word_delivered": round(cpu / delivered * 1e6, 2),
            "server_peak_rss_mib": round(peak_rss_kib(server.pid) / 1024, 1),
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--broker", default="memory://")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.words, args.followers, args.broker))))


if __name__ == "__main__":
    main()
