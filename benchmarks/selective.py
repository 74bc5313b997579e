"""Selective streams: ``python -m benchmarks.selective [--quick] [--repeat 3] [--profile DIR]``.

Two measurements on sse_tasks ``memory://``, a fresh server per count (``--smoke``: one
server for all):

- **Idle selective streams on a busy hub.** ``N`` streams ``GET /events?task=<id>`` of
  a ``sleep`` task that publishes nothing more, and one subscriber on ``/events``; the
  benchmark app's ``publish`` task (``progress_interval`` 0) reports ``--messages``
  times as fast as it can. Server CPU per published event, for each ``N``: if it grows
  with ``N`` the idle streams pay for events that are not theirs. The chunks the one
  subscriber receives count (about) the wake-ups of the log.
- **The curve.** ``--fanout`` subscribers on ``/events`` take a burst of
  ``--fanout-messages`` (server CPU per delivery), and the RSS growth per idle stream
  at each count (``benchmarks/fanout.py`` *fanout*, ``benchmarks/idle.py``).

Server CPU is read from ``/proc`` in clock ticks (10 ms): keep each burst to seconds of
CPU (the defaults; ``--quick``: 5,000 events, 0 to 5,000 idle streams, bursts of 50).
``--profile DIR`` runs py-spy on the server during the burst of the largest ``N`` (its
first run; its CPU figures then include py-spy's pauses, so ``--repeat`` 3 for them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

from . import client, harness
from .fanout import burst
from .idle import rss_per_stream
from .systems import Run, Server


class Size(NamedTuple):
    idle: list[int]  # idle ?task= streams, the first the reference
    messages: int  # progress events published with them
    fanout: list[int]  # subscribers of the curve
    fanout_messages: int  # the burst sent to them
    settle: float  # seconds for things to settle before a burst
    rss_settle: float  # before reading the RSS
    fresh: bool = True  # a fresh server per measurement (else one for the whole run)


SIZES = {
    "full": Size([0, 1000, 5000, 10_000], 20_000, [1000, 3000, 10_000], 200, 0.3, 1.0),
    "quick": Size([0, 1000, 5000], 5000, [1000, 3000, 10_000], 50, 0.3, 1.0),
    "smoke": Size([0, 5], 20, [5], 5, 0.05, 0.05, fresh=False),
}
#: The server of one measurement, as a context manager.
Serve = Callable[[], AbstractContextManager[Server]]


async def idle_selective(
    server: Server, run: Run, streams: int, messages: int, rss_settle: float, stem: Path | None = None
) -> dict[str, Any]:
    """``streams`` idle ``?task=`` streams while ``messages`` events go to one subscriber."""
    conn = await client.connect(server.port)
    response = await conn.post("/tasks", b'{"name": "sleep", "params": {"seconds": 3600}}')
    conn.close()
    if client.status(response) != 202:
        raise RuntimeError(f"submit failed: {response[:300]!r}")
    task_id = json.loads(client.body(response))["id"]
    await asyncio.sleep(run.settle)
    rss0 = server.rss()
    held = (
        await client.subscribe(
            server.port, streams, b"\x00never", path=f"/events?task={task_id}", timeout=run.timeout
        )
        if streams
        else []
    )
    chunks: list[int] = []
    try:
        await asyncio.sleep(rss_settle)
        rss1 = server.rss()
        full = await client.subscribe(
            server.port,
            1,
            client.MESSAGE["sse_tasks"],
            client.END["sse_tasks"],
            on_match=lambda count, *_: chunks.append(count),
            timeout=run.timeout,
        )
        try:
            await asyncio.sleep(run.settle)
            async with harness.profiled(server.main_pid, stem):  # the burst only
                trigger = await client.connect(server.port)
                window = server.window()
                response = await trigger.post("/tasks", client.trigger(messages))
                trigger.close()
                if client.status(response) != 202:
                    raise RuntimeError(f"publish failed: {response[:300]!r}")
                await asyncio.wait_for(full[0].ended, run.timeout)
                measured = window.close(full[0].ended.result())
        finally:
            await client.close_all(full)
    finally:
        await client.close_all(held)
        conn = await client.connect(server.port)  # else the server's shutdown waits for it
        await conn.post(f"/tasks/{task_id}", b"", method=b"DELETE")
        conn.close()
    return {
        "idle_streams": streams,
        "published": messages,
        "delivered": sum(chunks),
        "wakeups": len(chunks),
        "seconds": measured["seconds"],
        "server_cpu_s": measured["server_cpu"],
        "server_us_per_event": 1e6 * measured["server_cpu"] / messages,
        "server_us_per_wakeup": 1e6 * measured["server_cpu"] / max(len(chunks), 1),
        "kib_per_idle_stream": (rss1 - rss0) / streams / 1024 if streams else float("nan"),
        "other_cpu_pct": measured["other_cpu_pct"],
    }


async def selective(
    counts: list[int],
    messages: int,
    run: Run,
    rss_settle: float,
    repeat: int,
    serve: Serve,
    profile: Path | None,
) -> list[dict[str, Any]]:
    """:func:`idle_selective` at each count, medians of ``repeat`` runs."""
    results = []
    for n in counts:
        runs = []
        for attempt in range(repeat):
            stem = profile / f"selective-{n}" if profile and n == max(counts) and attempt == 0 else None
            with serve() as server:
                runs.append(await idle_selective(server, run, n, messages, rss_settle, stem))
        result = dict(runs[0])
        for key in (
            "server_us_per_event",
            "server_us_per_wakeup",
            "wakeups",
            "seconds",
            "kib_per_idle_stream",
        ):
            result[key] = statistics.median(r[key] for r in runs)
        results.append(result)
        print(
            f"  {n:,} idle ?task= streams: {result['server_us_per_event']:.2f} µs per event, "
            f"delivered {result['delivered']:,}/{messages:,}; "
            f"others {result['other_cpu_pct']:.0f}% of a core",
            flush=True,
        )
    base = results[0]["server_us_per_event"]
    columns: dict[str, Callable[[dict[str, Any]], str]] = {
        "idle ?task= streams": lambda r: f"{r['idle_streams']:,}",
        "server CPU µs per published event": lambda r: harness.number(r["server_us_per_event"]),
        "÷ the first": lambda r: harness.number(harness.ratio(r["server_us_per_event"], base), "x"),
        "wake-ups": lambda r: f"{r['wakeups']:,.0f}",
        "µs per wake-up": lambda r: harness.number(r["server_us_per_wakeup"]),
        "KiB per idle stream": lambda r: harness.number(r["kib_per_idle_stream"]),
    }
    print(harness.table([list(columns), *([f(r) for f in columns.values()] for r in results)]))
    for r in results[1:]:
        slope = (r["server_us_per_event"] - base) / ((r["idle_streams"] - results[0]["idle_streams"]) / 1000)
        print(f"  {r['idle_streams']:,}: +{slope:.2f} µs per published event per 1,000 idle streams")
    return results


async def curve(
    counts: list[int], messages: int, run: Run, rss_settle: float, serve: Serve
) -> list[dict[str, Any]]:
    """At each count: server CPU per delivery of a burst to every subscriber, and the RSS
    growth per idle stream (each on a server of its own)."""
    results = []
    for n in counts:
        with serve() as server:
            fanned = await burst(server, run, n, messages)
        with serve() as server:
            rss = await rss_per_stream(server, run, (n,), rss_settle)
        kept = (
            "server_us_per_delivery",
            "deliveries",
            "expected",
            "complete",
            "deliveries_per_s",
            "other_cpu_pct",
        )
        results.append(
            {"subscribers": n, **{k: fanned[k] for k in kept}, "kib_per_stream": rss[f"kib_per_stream_{n}"]}
        )
        print(f"  {n:,} subscribers: done; others {fanned['other_cpu_pct']:.0f}% of a core", flush=True)
    columns: dict[str, Callable[[dict[str, Any]], str]] = {
        "subscribers": lambda r: f"{r['subscribers']:,}",
        "server CPU µs per delivery": lambda r: harness.number(r["server_us_per_delivery"]),
        "delivered": lambda r: f"{r['deliveries']:,} / {r['expected']:,}",
        "deliveries/s": lambda r: f"{r['deliveries_per_s']:,.0f}",
        "KiB per idle stream": lambda r: harness.number(r["kib_per_stream"]),
    }
    print(harness.table([list(columns), *([f(r) for f in columns.values()] for r in results)]))
    return results


async def measure(args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    size = SIZES[harness.level(args)]
    run = Run(timeout=args.timeout, settle=size.settle, fresh=size.fresh)
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        shared = None if run.fresh else stack.enter_context(Server("sse_tasks", cpu))

        def serve() -> AbstractContextManager[Server]:
            return Server("sse_tasks", cpu) if shared is None else contextlib.nullcontext(shared)

        if not args.skip_selective:
            messages = args.messages or size.messages
            print(f"idle selective streams, one /events subscriber, a burst of {messages:,} progress events:")
            out["selective"] = await selective(
                args.idle or size.idle, messages, run, size.rss_settle, args.repeat, serve, args.profile
            )
        if not args.skip_curve:
            messages = args.fanout_messages or size.fanout_messages
            print(f"fan-out burst of {messages} to every subscriber; idle RSS per stream:")
            out["curve"] = await curve(args.fanout or size.fanout, messages, run, size.rss_settle, serve)
    return out


def main(argv: list[str] | None = None) -> int:
    counts = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.selective", description=__doc__.split("\n\n")[0]
    )
    harness.common_arguments(parser, quiet_wait=None)
    parser.add_argument(
        "--idle", type=counts, help="idle ?task= streams, comma-separated (first: the reference)"
    )
    parser.add_argument("--messages", type=int, help="progress events published with them")
    parser.add_argument("--fanout", type=counts, help="subscribers of the curve, comma-separated")
    parser.add_argument("--fanout-messages", type=int, help="the burst sent to them")
    parser.add_argument("--repeat", type=int, default=1, help="runs per idle count (medians)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--skip-selective", action="store_true")
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy on the server during the largest count's burst")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    env = harness.environment(harness.versions(harness.PACKAGES))
    harness.raise_nofile()
    result = harness.run_async(measure(args, harness.pin_client(not args.no_pin)))
    harness.write_json(args.json, {"environment": env, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
