"""What an idle stream is made of: ``python -m benchmarks.idle_memory [--streams 2000]``.

Runs the benchmark's sse_tasks app (``benchmarks/apps.py``) under uvicorn in this
process with ``tracemalloc`` on; a child process opens idle streams on ``/events``
(plain sockets: a request, then nothing). After a warm-up batch (one-time caches) it
takes a snapshot, opens ``--streams`` more, takes another, and prints the growth per
stream: the total, by file, and by the line that allocated it, with the stack of the
largest ones. Python allocations only: uvloop's and libuv's own C structures and the
kernel's socket buffers are not in it.
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

from .systems import free_port, raise_nofile

_REQUEST = b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"


def _open_streams(port: int, count: int) -> None:
    """Child process: open ``count`` streams, print "ready", hold them until stdin closes."""
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


async def _measure(port: int, warm: int, streams: int, frames: int, top: int) -> None:
    import uvicorn

    from .apps import make_app

    config = uvicorn.Config(
        make_app("sse_tasks"), host="127.0.0.1", port=port, loop="none", http="httptools",
        lifespan="on", log_level="warning", access_log=False, backlog=4096,
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(400):  # bounded: 20 s
        if server.started:
            break
        await asyncio.sleep(0.05)  # uvicorn offers no event for it

    async def clients(count: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.idle_memory", "--child", str(port), str(count),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError("the client process did not open its streams")
        await asyncio.sleep(1.0)  # every stream reached its wait
        return proc

    tracemalloc.start(frames)
    first = await clients(warm)
    before = tracemalloc.take_snapshot()
    second = await clients(streams)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"{streams} idle streams (after {warm} warm-up): {total / streams:,.0f} B of Python allocations")
    print(
        "(tracemalloc's own bookkeeping inflates RSS here: `python -m benchmarks --only idle` measures it)\n"
    )
    print("by file (bytes per stream, blocks per stream):")
    for stat in after.compare_to(before, "filename")[:top]:
        if stat.size_diff > 0:
            where = stat.traceback[0].filename
            print(f"  {stat.size_diff / streams:8,.0f}  {stat.count_diff / streams:5.1f}  {where}")
    print("\nby line:")
    for stat in after.compare_to(before, "lineno")[:top]:
        if stat.size_diff > 0:
            frame = stat.traceback[0]
            where = f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}"
            print(f"  {stat.size_diff / streams:8,.0f}  {stat.count_diff / streams:5.1f}  {where}")
    print("\nlargest by stack (innermost first, up to 6 frames of this project or its libraries):")
    for stat in after.compare_to(before, "traceback")[: top // 2]:
        if stat.size_diff <= 0:
            continue
        print(f"  {stat.size_diff / streams:8,.0f} B per stream")
        for frame in list(stat.traceback)[::-1][:6]:
            print(f"            {'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}")
    for proc in (second, first):
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()
    server.should_exit = True
    await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_memory")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--frames", type=int, default=30, help="stack depth tracemalloc keeps")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _open_streams(*args.child)
        return 0
    raise_nofile()
    import uvloop

    os.environ.setdefault("PYTHONHASHSEED", "0")
    started = time.monotonic()
    uvloop.run(_measure(free_port(), args.warm, args.streams, args.frames, args.top))
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
