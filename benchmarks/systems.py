"""The systems compared, their servers, and running a scenario across them.

==================  ==================================================================
``sse_tasks``        sse_tasks on ``memory://`` under uvicorn (``benchmarks/apps.py``)
``sse_tasks+redis``  sse_tasks on ``redis://``: a ``redis-server`` of its own on a free
                     loopback port, on the server's CPU; its CPU and RSS count as the
                     server's
``nchan``            nginx with the nchan module (Debian ``nginx-light`` and
                     ``libnginx-mod-nchan``), one worker process
``aiohttp-sse``      aiohttp + aiohttp-sse
``sse-starlette``    Starlette + sse-starlette under uvicorn, the plain baseline
==================  ==================================================================

:func:`prepare` installs what is missing (pip for aiohttp, aiohttp-sse and hiredis;
apt-get, as root, for nginx, nchan and redis-server) unless told not to, and says in
one line why a system is skipped when it still cannot run. :func:`main` runs
scenarios (:class:`Scenario`) over the systems, alternating them within each
repetition, and prints each scenario's table with the ratios between systems, then
the targets (:class:`Target`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import harness

SYSTEMS = ("sse_tasks", "sse_tasks+redis", "nchan", "aiohttp-sse", "sse-starlette")
#: Systems with a server-side publisher (``POST /tasks`` starting a loop of messages).
SERVER_PUBLISHER = ("sse_tasks", "sse_tasks+redis", "aiohttp-sse", "sse-starlette")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
PACKAGES = (*harness.PACKAGES, "aiohttp", "aiohttp-sse", "redis", "hiredis")


# -- what each system needs -------------------------------------------------------------


def _has_modules(*names: str) -> bool:
    importlib.invalidate_caches()
    return all(importlib.util.find_spec(name) is not None for name in names)


def nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _install(command: list[str], timeout: float) -> None:
    print(f"setup: {' '.join(command)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(command, env=env, timeout=timeout, check=False, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        print(f"setup: gave up after {timeout:.0f} s", flush=True)


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def missing(system: str) -> str | None:
    """Why ``system`` cannot run here, or None."""
    if system == "aiohttp-sse" and not _has_modules("aiohttp", "aiohttp_sse"):
        return "aiohttp and aiohttp-sse are not installed (pip install aiohttp aiohttp-sse)"
    if system == "nchan" and (nginx() is None or not NCHAN_MODULE.exists()):
        return "nginx with the nchan module is not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if system == "sse_tasks+redis":
        if harness.redis_server() is None:
            return "redis-server is not installed (apt-get install redis-server)"
        if not _has_modules("redis"):
            return "the redis client is not installed (pip install 'sse-tasks[redis]')"
    if system not in SYSTEMS:
        return f"unknown system {system!r}"
    return None


def prepare(systems: Sequence[str], install: bool = True) -> dict[str, str]:
    """Install what the systems need (when ``install``); {system: why skipped} for the rest."""
    if install:
        pip: list[str] = []
        apt: list[str] = []
        if "aiohttp-sse" in systems and missing("aiohttp-sse"):
            pip += ["aiohttp", "aiohttp-sse"]
        if "sse_tasks+redis" in systems:
            if not _has_modules("redis", "hiredis"):
                pip.append("redis[hiredis]>=5.0")  # what the ``redis`` extra installs
            if harness.redis_server() is None:
                apt.append("redis-server")
        if "nchan" in systems and missing("nchan"):
            apt += ["nginx-light", "libnginx-mod-nchan"]
        if pip:
            _install([sys.executable, "-m", "pip", "install", "--quiet", *pip], 300)
        if apt and _can_apt():
            _install(["apt-get", "update", "-qq"], 600)
            _install(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *apt], 600)
    skipped = {}
    for system in systems:
        reason = missing(system)
        if reason is not None:
            if system == "nchan" and install and not _can_apt():
                reason += "; installing it needs root and apt-get"
            skipped[system] = reason
            print(f"skipped: {system}: {reason}", flush=True)
    return skipped


def system_versions() -> dict[str, str]:
    """Versions of everything compared: Python packages, nginx, nchan, redis-server."""
    found = harness.versions(PACKAGES)
    binary = nginx()
    found["nginx"] = harness.command_output(binary, "-v").rsplit("/", 1)[-1] if binary else "-"
    nchan = harness.command_output("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan")
    found["nchan"] = "-" if "no packages found" in nchan else nchan
    return found


# -- servers ----------------------------------------------------------------------------

_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module {module};
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    client_body_buffer_size 16k;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /events {{
            nchan_subscriber eventsource;
            nchan_channel_id bench;
            nchan_subscriber_first_message newest;
        }}
        location = /publish {{
            nchan_publisher;
            nchan_channel_id bench;
        }}
    }}
}}
"""


class Server:
    """One system's server, its processes pinned to ``cpu``; CPU and RSS summed over
    them. ``options``: more arguments for a Python server (``python -m benchmarks.apps``)."""

    def __init__(self, system: str, cpu: int | None, options: Sequence[str] = ()) -> None:
        self.system = system
        self.port = harness.free_port()
        self.procs = harness.Processes(system)
        self.main: subprocess.Popen[bytes] | None = None
        try:
            if system == "nchan":
                self._start_nchan(cpu)
            else:
                self._start_python(cpu, options)
        except BaseException:
            self.stop()
            raise

    def _start_python(self, cpu: int | None, options: Sequence[str]) -> None:
        app = "sse_tasks" if self.system.startswith("sse_tasks") else self.system
        command = [sys.executable, "-m", "benchmarks.apps", app, str(self.port), *options]
        if self.system == "sse_tasks+redis":
            _, url = harness.start_redis(self.procs, cpu, "--maxclients", "1000")
            command += ["--broker", f"{url}/0"]
        if cpu is not None:
            command += ["--cpu", str(cpu)]  # pinned by the server itself, once it has imported
        self.main = self.procs.spawn("server", command, env=harness.python_env())
        self.procs.wait_port(self.port, f"the {self.system} server")

    def _start_nchan(self, cpu: int | None) -> None:
        binary = nginx()
        assert binary is not None
        (self.procs.dir / "body").mkdir()
        conf = self.procs.dir / "nginx.conf"
        nofile = harness.raise_nofile()
        conf.write_text(
            _NGINX_CONF.format(
                dir=self.procs.dir,
                module=NCHAN_MODULE,
                port=self.port,
                nofile=nofile,
                connections=nofile - 100,
            )
        )
        self.procs.spawn("nginx", [binary, "-c", str(conf), "-p", str(self.procs.dir)], cpu)
        self.procs.wait_port(self.port, "nginx")

    @property
    def main_pid(self) -> int | None:
        """The Python server's process (None for nginx)."""
        return None if self.main is None else self.main.pid

    def cpu(self) -> float:
        """CPU seconds of every process of the server (nginx: master and worker)."""
        return harness.cpu_seconds(self.procs.pids())

    def helper_cpu(self) -> float:
        """CPU seconds of what a Python server started with it (its redis-server)."""
        if self.main is None:
            return 0.0
        return harness.cpu_seconds(self.procs.pids(p for p in self.procs.procs if p is not self.main))

    def rss(self, field: str = "VmRSS") -> int:
        """Resident memory of the server's processes, in bytes (``VmHWM``: the peak)."""
        return harness.memory(self.procs.pids(), field)

    def window(self) -> harness.Window:
        return harness.Window(self.cpu, self.helper_cpu)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.procs)):  # the server first, then its redis
            self.procs.stop(proc)
        self._report_logs()
        self.procs.close()

    def _report_logs(self) -> None:
        """Print what the server logged, but for the demo task's expected failures."""
        lines: list[str] = []
        for log in sorted(self.procs.dir.glob("*.log")):
            if log.name.startswith("redis"):
                continue
            for line in log.read_text(errors="replace").splitlines():
                if not line.strip() or "task failed id=" in line or "[notice]" in line:
                    continue
                if "Using " in line and "shared memory for nchan" in line:
                    continue
                lines.append(line)
        if lines:
            print(
                f"  [{self.system}] server log: {len(lines)} lines, the last: {lines[-1][:300]}", flush=True
            )

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- scenarios across the systems ---------------------------------------------------------

#: (metric, label, higher is better): a row of a scenario's table.
Row = tuple[str, str, bool]
Results = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Run:
    """What the scenarios of one run share, by level (``RUNS``)."""

    timeout: float = 55.0
    settle: float = 0.3  # after the streams are open, before publishing
    fresh: bool = True  # a fresh server for every scenario (else one per system for all)


RUNS = {"full": Run(), "quick": Run(), "smoke": Run(timeout=20.0, settle=0.05, fresh=False)}


@dataclass(frozen=True)
class Target:
    """A goal for a scenario's result: ``metric`` of ``top`` ÷ the same of ``bottom``
    (``top``'s own value when ``bottom`` is None), ``at_least`` or ``at_most``. A
    ``metric`` ending in ``*`` takes the largest count measured; ``name`` may name
    fields of ``top``'s result, and ``{n}``: that count."""

    name: str
    metric: str
    at_least: float | None = None
    at_most: float | None = None
    bottom: str | None = None
    top: str = "sse_tasks"
    unit: str = "x"


def redis_target(
    name: str, metric: str, at_least: float | None = None, at_most: float | None = None
) -> Target:
    """A goal for ``redis://`` ÷ ``memory://``."""
    return Target(name, metric, at_least, at_most, bottom="sse_tasks", top="sse_tasks+redis")


@dataclass(frozen=True)
class Scenario:
    """One scenario of the comparison.

    ``measure(server, run, **size, **arguments)`` measures one run against one server,
    with ``sizes[level]`` (``full``, ``quick``, ``smoke``) and the ``arguments`` of
    each of ``variants[system]`` (``{label suffix: arguments}``; one variant, ``""``,
    without). ``rows``: the table's rows, or a function of the results giving them.
    ``notes``: lines printed under the table."""

    name: str
    measure: Callable[..., Awaitable[dict[str, Any]]]
    sizes: dict[str, dict[str, Any]]
    rows: Sequence[Row] | Callable[[Results], Sequence[Row]]
    systems: tuple[str, ...] = SYSTEMS
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    notes: Callable[[Results], list[str]] | None = None


def comparison() -> tuple[Scenario, ...]:
    """Every scenario of ``python -m benchmarks``, in the order they run."""
    from . import fanout, idle, light, submit  # they build on this module

    return (
        fanout.CLOSED,
        light.LIGHT,
        fanout.FANOUT,
        fanout.THROUGHPUT,
        idle.IDLE,
        submit.SUBMIT,
        submit.LATENCY,
    )


async def run_all(
    scenarios: Sequence[Scenario],
    scale: str = "full",
    repeat: int = 1,
    pin: bool = True,
    systems: Sequence[str] = SYSTEMS,
    quiet: float = 0.0,
    profile: Path | None = None,
) -> dict[str, Results]:
    """{scenario: {system or system:variant: median result}}. ``systems`` must be
    installed (see :func:`prepare`); they alternate within each repetition. Before each
    run, wait up to ``quiet`` seconds for other processes to leave the CPUs alone."""
    server_cpu = harness.pin_client(pin)
    harness.raise_nofile()
    results: dict[str, Results] = {}
    kept: dict[str, Server] = {}  # RUNS[scale].fresh false: one server per system for every scenario
    try:
        for scenario in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(repeat):
                for system in (s for s in scenario.systems if s in systems):
                    for variant, arguments in (scenario.variants.get(system) or {"": {}}).items():
                        label = f"{system}:{variant}" if variant else system
                        done = runs.setdefault(label, [])
                        name = f"{scenario.name}-{label.replace(':', '-')}-{len(done)}"
                        stem = None if profile is None else profile / name
                        done.append(
                            await _run_one(scenario, system, arguments, scale, server_cpu, kept, quiet, stem)
                        )
            results[scenario.name] = {label: harness.median_of(r) for label, r in runs.items()}
            print_scenario(scenario, results[scenario.name])
    finally:
        for server in kept.values():
            server.stop()
    return results


async def _run_one(
    scenario: Scenario,
    system: str,
    arguments: dict[str, Any],
    scale: str,
    cpu: int | None,
    kept: dict[str, Server],
    quiet: float,
    stem: Path | None,
) -> dict[str, Any]:
    run = RUNS[scale]
    try:
        if quiet > 0:
            others = await asyncio.to_thread(harness.wait_quiet, quiet)
            if others >= 25.0:
                print(f"  [{system}] other processes still use {others:.0f}% of a core after {quiet:.0f} s")
        if not run.fresh and system not in kept:
            kept[system] = Server(system, cpu)
        with Server(system, cpu) if run.fresh else contextlib.nullcontext(kept[system]) as server:
            async with harness.profiled(server.main_pid, stem):
                return await scenario.measure(server, run, **scenario.sizes[scale], **arguments)
    except Exception as exc:  # one system failing must not lose the others' results
        print(f"  [{system}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


#: (column title, numerator, denominator) of the ratio columns.
RATIOS = (
    ("÷nchan", "sse_tasks", "nchan"),
    ("÷aiohttp", "sse_tasks", "aiohttp-sse"),
    ("÷starlette", "sse_tasks", "sse-starlette"),
    ("redis÷mem", "sse_tasks+redis", "sse_tasks"),
)
_SHORT = {"sse_tasks+redis": "+redis", "sse-starlette": "starlette"}


def value(result: Results, label: str, metric: str) -> float:
    found = result.get(label, {}).get(metric)
    return float(found) if isinstance(found, (int, float)) else float("nan")


def between(result: Results, metric: str, top: str, bottom: str) -> float:
    """``metric`` of ``top`` ÷ the same of ``bottom``."""
    return harness.ratio(value(result, top, metric), value(result, bottom, metric))


def print_scenario(scenario: Scenario, result: Results) -> None:
    print(f"\n== {scenario.name}")
    rows = scenario.rows(result) if callable(scenario.rows) else scenario.rows
    lines = [["", *(_SHORT.get(s, s) for s in SYSTEMS), *(title for title, *_ in RATIOS)]]
    for metric, label, higher in rows:
        lines.append(
            [label + (" ↑" if higher else "")]
            + [harness.number(value(result, s, metric)) for s in SYSTEMS]
            + [harness.number(between(result, metric, a, b), "x") for _, a, b in RATIOS]
        )
    print(harness.table(lines))
    for line in scenario.notes(result) if scenario.notes else []:
        print(f"  {line}")
    for label, r in result.items():
        notes = [r["error"]] if "error" in r else _notes(label, r)
        if notes:
            print(f"  [{label}] " + ("FAILED: " if "error" in r else "") + "; ".join(notes))
    sys.stdout.flush()


def _notes(label: str, r: dict[str, Any]) -> list[str]:
    """CPU of each side, what the rest of the machine used, what was delivered or refused."""
    notes = []
    if "server_cpu_pct" in r:
        client = f"client CPU {r['client_cpu_pct']:.0f}%"
        if "publisher_cpu_pct" in r:
            client += f" (publisher {r['publisher_cpu_pct']:.0f}%)"
        server = f"server CPU {r['server_cpu_pct']:.0f}%"
        if r.get("helper_cpu_pct", 0) >= 0.5 and label.startswith("sse_tasks+redis"):
            server += f" (redis-server {r['helper_cpu_pct']:.0f}%)"
        notes.append(f"{server}, {client}")
        if r.get("other_cpu_pct", 0) >= 10:
            notes.append(f"other processes {r['other_cpu_pct']:.0f}% of a core")
        if r.get("steal_pct", 0) >= 5:
            notes.append(f"steal {r['steal_pct']:.0f}%")
    for prefix in ("paced_", ""):
        if f"{prefix}deliveries" in r:
            name = prefix or ("burst_" if "paced_deliveries" in r else "")
            got, wanted = r[prefix + "deliveries"], r[prefix + "expected"]
            notes.append(
                f"{name}delivered {got:.0f}/{wanted}" + ("" if r[prefix + "complete"] else " (TIMED OUT)")
            )
    if r.get("refused"):
        notes.append(f"{r['refused']} publishes refused")
    if r.get("publisher_late"):
        notes.append(f"{r['publisher_late']} publishes > 5 ms late (max {r['publisher_lag_max_ms']:.1f} ms)")
    if "answer_p50_ms" in r:
        notes.append(f"publish answer p50 {r['answer_p50_ms']:.2f} ms")
    return notes


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def evaluate(target: Target, result: Results) -> dict[str, Any]:
    """The measured value of ``target`` and whether it is met (None: not measured). A
    target whose runs did not complete (a subscriber missed events, a publish was
    refused, a time-out) is not met, whatever the value."""
    top = result.get(target.top, {})
    metric, fields = target.metric, _Fields(top)
    if metric.endswith("*"):
        counts = sorted(int(k[len(metric) - 1 :]) for k in top if k.startswith(metric[:-1]))
        fields["n"] = counts[-1] if counts else "?"
        metric = f"{metric[:-1]}{fields['n']}"
    found = value(result, target.top, metric)
    if target.bottom is not None:
        found = between(result, metric, target.top, target.bottom)
    low, high = target.at_least, target.at_most
    met = None if math.isnan(found) else (low is None or found >= low) and (high is None or found <= high)
    incomplete = [s for s in (target.top, target.bottom) if s and result.get(s, {}).get("complete") is False]
    return {
        "target": target.name.format_map(fields),
        "value": found,
        "unit": target.unit,
        "met": False if met and incomplete else met,
        "incomplete": incomplete,
    }


def targets(scenarios: Sequence[Scenario], results: dict[str, Results]) -> list[dict[str, Any]]:
    """Every target of the scenarios run, evaluated."""
    return [evaluate(t, results[s.name]) for s in scenarios if s.name in results for t in s.targets]


def print_targets(found: list[dict[str, Any]]) -> None:
    print("\n== targets")
    lines = []
    for target in found:
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        if target["incomplete"]:
            met += f" (incomplete: {', '.join(target['incomplete'])})"
        lines.append([target["target"], harness.number(target["value"], target["unit"]), met])
    if lines:
        print(harness.table(lines))
    sys.stdout.flush()


def scale_of(scenarios: Sequence[Scenario], scale: str) -> dict[str, Any]:
    """The sizes of a run, flat (``closed_subscribers``, …, ``timeout``), for its JSON."""
    sizes = {f"{s.name}_{key}": v for s in scenarios for key, v in s.sizes[scale].items()}
    return {**sizes, **asdict(RUNS[scale])}


def main(
    scenarios: Sequence[Scenario],
    argv: list[str] | None = None,
    prog: str = "python -m benchmarks",
    description: str = "",
    epilog: str | None = None,
) -> int:
    """The command line of a comparison: run ``scenarios``, print their tables and targets."""
    names = [s.name for s in scenarios]
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    harness.common_arguments(parser, quiet_wait=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per system and scenario (medians)")
    parser.add_argument("--only", default=",".join(names), help=f"comma-separated: {','.join(names)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated: {','.join(SYSTEMS)}")
    parser.add_argument("--no-install", action="store_true", help="skip systems that are not installed")
    parser.add_argument(
        "--profile", type=Path, help="py-spy on each Python server: stacks and summaries go here"
    )
    args = parser.parse_args(argv)
    chosen = []
    for name in (n.strip() for n in args.only.split(",") if n.strip()):
        if name not in names:
            parser.error(f"unknown scenario {name!r}")
        chosen.append(scenarios[names.index(name)])
    wanted = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    for system in wanted:
        if system not in SYSTEMS:
            parser.error(f"unknown system {system!r}")
    skipped = prepare(wanted, install=not args.no_install)
    env = harness.environment(system_versions())
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    scale = harness.level(args)
    started = time.monotonic()
    results = harness.run_async(
        run_all(
            chosen,
            scale,
            max(1, args.repeat),
            not args.no_pin,
            tuple(s for s in wanted if s not in skipped),
            args.quiet_wait,
            args.profile,
        )
    )
    found = targets(chosen, results)
    print_targets(found)
    print(f"\n{time.monotonic() - started:.0f} s")
    harness.write_json(
        args.json,
        {
            "environment": env,
            "scale": scale_of(chosen, scale),
            "skipped": skipped,
            "results": results,
            "targets": found,
        },
    )
    return 0
