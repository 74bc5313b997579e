"""Idle memory: ``python -m benchmarks.idle [--quick]`` and ``python -m benchmarks.idle tracemalloc``.

- **Against the peers**: 5,000 then 10,000 idle streams on ``/events`` (200 opened and
  closed first, so one-time caches are not counted); the growth of the server's RSS
  per stream (nginx: master and worker; ``redis://``: with its redis-server).
- **What an idle stream is made of** (``tracemalloc [--streams 2000] [--warm 200]``):
  the benchmark's sse_tasks app under uvicorn in this process with ``tracemalloc`` on;
  a child process opens the streams (plain sockets: a request, then nothing). The
  growth per stream between two snapshots: the total, by file, by line, and the
  stacks of the largest. Python allocations only: uvloop's and libuv's C structures
  and the kernel's socket buffers are not in it, and tracemalloc's own bookkeeping
  inflates the RSS (the first measurement gives that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from . import client
from .harness import free_port, raise_nofile, run_async
from .systems import Results, Row, Run, Scenario, Server, Target
from .systems import main as compare


async def rss_per_stream(
    server: Server, run: Run, streams: tuple[int, ...], settle: float = 1.0
) -> dict[str, Any]:
    """Hold idle ``/events`` streams, ``streams`` of them in turn: the RSS growth per
    stream at each count (``kib_per_stream_<count>``), ``settle`` seconds after opening."""
    marker = client.FINAL[server.system]
    warm = await client.subscribe(server.port, min(200, max(streams)), marker, timeout=run.timeout)
    await client.close_all(warm)
    await asyncio.sleep(settle / 2)
    base = server.rss()
    result: dict[str, Any] = {"rss_base_mib": base / 2**20}
    held: list[client.Subscriber] = []
    try:
        for count in sorted(streams):
            held += await client.subscribe(server.port, count - len(held), marker, timeout=run.timeout)
            await asyncio.sleep(settle)
            result[f"kib_per_stream_{count}"] = (server.rss() - base) / count / 1024
    finally:
        await client.close_all(held)
    return result


def _rows(result: Results) -> list[Row]:
    counts = sorted(
        {int(key.rsplit("_", 1)[1]) for r in result.values() for key in r if key.startswith("kib_")}
    )
    return [(f"kib_per_stream_{n}", f"KiB/stream at {n}", False) for n in counts]


IDLE = Scenario(
    "idle",
    rss_per_stream,
    sizes={
        "full": {"streams": (5000, 10_000), "settle": 1.0},
        "quick": {"streams": (1000, 2000), "settle": 1.0},
        "smoke": {"streams": (10, 20), "settle": 0.05},
    },
    rows=_rows,
    targets=(Target("idle stream ≤ 12 KiB (at {n} streams)", "kib_per_stream_*", at_most=12.0, unit=" KiB"),),
)

SCENARIOS = (IDLE,)

# -- what an idle stream is made of ---------------------------------------------------------

_REQUEST = b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"


def _open_streams(port: int, count: int) -> None:
    """The child process: open ``count`` streams, print "ready", hold them until stdin closes."""
    raise_nofile()
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_REQUEST)
        held.append(sock)
    for sock in held:  # every stream has started (its headers and retry frame arrived)
        sock.recv(4096)
    print("ready", flush=True)
    sys.stdin.read()


async def breakdown(warm: int, streams: int, frames: int, top: int, settle: float) -> float:
    """Print what ``streams`` idle streams allocate, after ``warm`` of them; bytes per stream."""
    import uvicorn

    from .apps import sse_tasks_app

    port = free_port()
    config = uvicorn.Config(
        sse_tasks_app(),
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(400):  # bounded: 20 s
        if server.started:
            break
        await asyncio.sleep(0.05)  # uvicorn offers no event for it

    async def clients(count: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.idle",
            "tracemalloc",
            "--child",
            str(port),
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError("the client process did not open its streams")
        await asyncio.sleep(settle)  # every stream reached its wait
        return proc

    tracemalloc.start(frames)
    first = await clients(warm)
    before = tracemalloc.take_snapshot()
    second = await clients(streams)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    total = sum(s.size_diff for s in after.compare_to(before, "filename")) / streams
    print(f"{streams} idle streams (after {warm} warm-up): {total:,.0f} B of Python allocations per stream")
    print("(tracemalloc's own bookkeeping inflates RSS here: `python -m benchmarks.idle` measures it)\n")

    def where(frame: tracemalloc.Frame, line: bool = True) -> str:
        return "/".join(Path(frame.filename).parts[-2:]) + (f":{frame.lineno}" if line else "")

    for title, key in (("by file", "filename"), ("by line", "lineno")):
        print(f"{title} (bytes per stream, blocks per stream):")
        for stat in after.compare_to(before, key)[:top]:
            if stat.size_diff > 0:
                frame = stat.traceback[0]
                name = frame.filename if key == "filename" else where(frame)
                print(f"  {stat.size_diff / streams:8,.0f}  {stat.count_diff / streams:5.1f}  {name}")
        print()
    print("largest by stack (innermost first, up to 6 frames):")
    for stat in after.compare_to(before, "traceback")[: top // 2]:
        if stat.size_diff > 0:
            print(f"  {stat.size_diff / streams:8,.0f} B per stream")
            for frame in list(stat.traceback)[::-1][:6]:
                print(f"            {where(frame)}")
    for proc in (second, first):
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()
    server.should_exit = True
    await serving
    return total


def tracemalloc_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle tracemalloc")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--frames", type=int, default=30, help="stack depth tracemalloc keeps")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds for the streams to reach their wait"
    )
    parser.add_argument("--smoke", action="store_true", help="20 streams after 5, 10 lines each")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _open_streams(*args.child)
        return 0
    if args.smoke:
        args.streams, args.warm, args.top, args.settle = 20, 5, 10, 0.1
    raise_nofile()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    started = time.monotonic()
    run_async(breakdown(args.warm, args.streams, args.frames, args.top, args.settle))
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["tracemalloc"]:
        return tracemalloc_main(args[1:])
    epilog = "python -m benchmarks.idle tracemalloc --help: what an idle stream is made of"
    return compare(SCENARIOS, args, "python -m benchmarks.idle", __doc__.split("\n\n")[0], epilog)


if __name__ == "__main__":
    raise SystemExit(main())
