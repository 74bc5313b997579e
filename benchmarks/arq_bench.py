"""arq throughput with ÷ without the sse_tasks hook: ``python -m benchmarks.engines arq [--smoke]``.

arq: N jobs enqueued, then one ``arq --burst`` worker (10 jobs at a time) drains them;
tasks per second for a no-op job and a 1 ms job, hooked and not. ``--smoke``: a few jobs.
Needs a redis-server binary (a throwaway server on a free port is started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _enqueue(url: str, name: str, n: int) -> None:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        await pool.flushdb()
        for _ in range(n):
            await pool.enqueue_job(name)
    finally:
        await pool.aclose(close_connection_pool=True)
        await pool.connection_pool.disconnect(inuse_connections=True)


def arq_rate(base: str, name: str, n: int, hook: bool) -> float:
    """Jobs per second one burst worker drains (its start-up not counted: timed from its first job)."""
    arq_url, hub_url = f"{base}/1", f"{base}/0"
    asyncio.run(_enqueue(arq_url, name, n))
    env = {
        **os.environ,
        "ARQ_REDIS_URL": arq_url,
        "SSE_TASKS_BROKER": hub_url,
        "ARQ_BENCH_HOOK": "1" if hook else "0",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "arq", "benchmarks.arq_bench_tasks.WorkerSettings"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    empty = time.perf_counter()
    asyncio.run(_enqueue(arq_url, name, 0))
    subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "arq", "benchmarks.arq_bench_tasks.WorkerSettings"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    startup = time.perf_counter() - empty
    return n / max(elapsed - startup, 1e-3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n = 20 if args.smoke else args.jobs
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        base = f"redis://127.0.0.1:{port}"
        results: dict[str, float] = {}
        for name in ("noop", "one_ms"):
            plain = arq_rate(base, name, n, hook=False)
            hooked = arq_rate(base, name, n, hook=True)
            results[f"arq {name} tasks/s without"] = round(plain, 1)
            results[f"arq {name} tasks/s with"] = round(hooked, 1)
            results[f"arq {name} ratio"] = round(hooked / plain, 3)
            print(f"arq {name}: {plain:.0f}/s without, {hooked:.0f}/s with the hook: {hooked / plain:.2f}x")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
