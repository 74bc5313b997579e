"""Cost with the idle: ``python -m benchmarks.selective [--quick] [--profile DIR]``.

Two measurements on sse_tasks ``memory://``, the server pinned to CPU 0 and the
client (this process) to CPU 1, a fresh server per count:

- **Idle selective streams on a busy hub.** ``N`` streams ``GET /events?task=<id>`` of
  a ``sleep`` task that publishes nothing more, and one subscriber on ``/events``; the
  benchmark app's ``publish`` task (``progress_interval`` 0) reports ``--messages``
  times as fast as it can. Server CPU per published event, for each ``N``: if it grows
  with ``N`` the idle streams pay for events that are not theirs. The chunks the one
  subscriber receives count (about) the wake-ups of the log.
- **The curve.** ``--fanout`` subscribers on ``/events`` take a burst of
  ``--fanout-messages`` (server CPU per delivery), and the RSS growth per idle stream
  at each count.

Server CPU is read from ``/proc`` in clock ticks (10 ms): keep each burst to seconds of
CPU (the defaults; ``--quick``: 5,000 events, 0 to 5,000 idle streams, bursts of 50).

``--profile DIR`` runs py-spy on the server during the burst of the largest ``N`` (its
first run; its CPU figures then include py-spy's pauses, so ``--repeat`` 3 for them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

from . import client
from .run import Window, _trigger, fanout, idle
from .systems import Server, raise_nofile


async def _spy(server: Server, stem: Path) -> asyncio.subprocess.Process:
    """py-spy on the server from now on (raw collapsed stacks into ``<stem>.txt``)."""
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        *("record", "--pid", str(server.main_pid), "--rate", "250", "--format", "raw"),
        *("--nonblocking", "--output", str(stem.with_suffix(".txt"))),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches
    return spy


async def _unspy(spy: asyncio.subprocess.Process, stem: Path) -> None:
    from . import profile as summary

    spy.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(spy.wait(), 10)
    except TimeoutError:
        spy.kill()
        await spy.wait()
    raw = stem.with_suffix(".txt")
    if raw.exists():
        stem.with_name(stem.name + "-summary.txt").write_text(summary.summarize(raw.read_text()))


async def _one_selective(
    server: Server, idle_streams: int, messages: int, timeout: float, stem: Path | None = None
) -> dict[str, Any]:
    conn = await client.connect(server.port)
    response = await conn.post("/tasks", b'{"name": "sleep", "params": {"seconds": 3600}}')
    conn.close()
    if client.status(response) != 202:
        raise RuntimeError(f"submit failed: {response[:300]!r}")
    task_id = json.loads(client.body(response))["id"]
    await asyncio.sleep(0.3)
    rss0 = server.rss()
    held = await client.subscribe(
        server.port, idle_streams, b"\x00never", path=f"/events?task={task_id}", timeout=timeout
    ) if idle_streams else []  # fmt: skip
    chunks: list[int] = []
    try:
        await asyncio.sleep(1.0)
        rss1 = server.rss()
        full = await client.subscribe(
            server.port, 1, client.MESSAGE["sse_tasks"], client.END["sse_tasks"],
            on_match=lambda count, *_: chunks.append(count), timeout=timeout,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        spy = await _spy(server, stem) if stem is not None else None  # the burst only
        trigger = await client.connect(server.port)
        window = Window(server)
        response = await trigger.post("/tasks", _trigger(messages))
        trigger.close()
        if client.status(response) != 202:
            raise RuntimeError(f"publish failed: {response[:300]!r}")
        await asyncio.wait_for(full[0].ended, timeout)
        measured = window.close(full[0].ended.result())
        if spy is not None:
            assert stem is not None
            await _unspy(spy, stem)
        await client.close_all(full)
    finally:
        await client.close_all(held)
    return {
        "idle_streams": idle_streams,
        "published": messages,
        "delivered": sum(chunks),
        "wakeups": len(chunks),
        "seconds": measured["seconds"],
        "server_cpu_s": measured["server_cpu"],
        "server_us_per_event": 1e6 * measured["server_cpu"] / messages,
        "server_us_per_wakeup": 1e6 * measured["server_cpu"] / max(len(chunks), 1),
        "kib_per_idle_stream": (rss1 - rss0) / idle_streams / 1024 if idle_streams else float("nan"),
        "other_cpu_pct": measured["other_cpu_pct"],
    }


async def selective(
    counts: list[int], messages: int, timeout: float, repeat: int, profile: Path | None
) -> list[dict[str, Any]]:
    results = []
    for n in counts:
        runs = []
        for attempt in range(repeat):
            with Server("sse_tasks", 0) as server:
                stem = profile / f"selective-{n}" if profile and n == max(counts) and attempt == 0 else None
                runs.append(await _one_selective(server, n, messages, timeout, stem))
        result = dict(runs[0])
        medians = ("server_us_per_event", "server_us_per_wakeup", "wakeups", "seconds", "kib_per_idle_stream")
        for key in medians:
            result[key] = statistics.median(r[key] for r in runs)
        results.append(result)
        print(
            f"  {n:>6,} idle ?task= streams: {result['server_us_per_event']:7.2f} µs server CPU per event, "
            f"{result['wakeups']:>5,.0f} wake-ups ({result['server_us_per_wakeup']:7.1f} µs each), "
            f"delivered {result['delivered']:,}/{messages:,}, {result['seconds']:.2f} s, "
            f"{result['kib_per_idle_stream']:.1f} KiB/idle stream, "
            f"others {result['other_cpu_pct']:.0f}% of a core",
            flush=True,
        )
    return results


async def curve(counts: list[int], messages: int, timeout: float) -> list[dict[str, Any]]:
    results = []
    for n in counts:
        with Server("sse_tasks", 0) as server:
            burst = await fanout(server, n, messages, timeout)
        with Server("sse_tasks", 0) as server:
            memory = await idle(server, (n,), timeout)
        result = {
            "subscribers": n,
            "server_us_per_delivery": burst["server_us_per_delivery"],
            "deliveries": burst["deliveries"],
            "expected": burst["expected"],
            "deliveries_per_s": burst["deliveries_per_s"],
            "kib_per_stream": memory[f"kib_per_stream_{n}"],
            "other_cpu_pct": burst["other_cpu_pct"],
        }
        results.append(result)
        print(
            f"  {n:>6,} subscribers: {result['server_us_per_delivery']:.2f} µs server CPU per delivery "
            f"({result['deliveries']:,}/{result['expected']:,} delivered, "
            f"{result['deliveries_per_s']:,.0f}/s), {result['kib_per_stream']:.1f} KiB per idle stream, "
            f"others {result['other_cpu_pct']:.0f}% of a core",
            flush=True,
        )
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not args.skip_selective:
        burst = f"a burst of {args.messages:,} progress events"
        print(f"idle selective streams, one /events subscriber, {burst}:")
        out["selective"] = await selective(args.idle, args.messages, args.timeout, args.repeat, args.profile)
        base = out["selective"][0]["server_us_per_event"]
        for r in out["selective"][1:]:
            slope = (r["server_us_per_event"] - base) / (r["idle_streams"] / 1000)
            print(
                f"  {r['idle_streams']:,}: {r['server_us_per_event'] / base:.1f}x the CPU per event of "
                f"{out['selective'][0]['idle_streams']:,}; +{slope:.2f} µs per event per 1,000 idle streams"
            )
    if not args.skip_curve:
        print(f"fan-out burst of {args.fanout_messages} to every subscriber; idle RSS per stream:")
        out["curve"] = await curve(args.fanout, args.fanout_messages, args.timeout)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.selective")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--idle", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--fanout", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--fanout-messages", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--skip-selective", action="store_true")
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.idle = args.idle or ([0, 1000, 5000] if args.quick else [0, 1000, 5000, 10_000])
    args.messages = args.messages or (5000 if args.quick else 20_000)
    args.fanout = args.fanout or [1000, 3000, 10_000]
    args.fanout_messages = args.fanout_messages or (50 if args.quick else 200)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[1]})
    import uvloop

    result = uvloop.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
