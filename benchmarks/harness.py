"""What every benchmark shares: processes, CPU and memory, statistics, reports, profiles.

- **Processes**: :class:`Processes` starts commands pinned to a CPU, each in a session
  of its own with its output in a log file, and stops them; :func:`start_redis`, free
  ports, the open-files limit, :func:`pin_client` for this process.
- **CPU and memory** from ``/proc``: a process tree's CPU seconds and RSS, the
  machine's busy and steal time; :class:`Window` measures one run, :func:`wait_quiet`
  waits (bounded) for the rest of the machine to leave the CPUs alone.
- **Statistics and reports**: percentiles, medians of repeated runs, ratios, aligned
  text tables, the environment (CPU, versions) and JSON results.
- **Profiles**: :func:`profiled` runs py-spy on a server during a run;
  ``python -m benchmarks.harness STACKS.txt`` prints the breakdown of a profile.
- **The engine scenario**: a task engine's worker with ÷ without the sse_tasks hook
  (:func:`engine_throughput`) and success → follower (:func:`engine_latency`), for every
  engine given as an :class:`Engine` adapter (``benchmarks/engines.py`` lists them):
  :func:`engine_main` is their command line.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The packages every sse_tasks server runs on, whose versions each benchmark prints.
PACKAGES = ("sse-tasks", "starlette", "sse-starlette", "uvicorn", "uvloop", "httptools", "anyio", "orjson")
T = TypeVar("T")


def run_async(main: Awaitable[T]) -> T:
    """Run ``main`` on uvloop (``uvicorn[standard]`` installs it), without changing the policy."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


# -- processes ------------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise the open-files limit to its hard maximum (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_client(pin: bool = True) -> int | None:
    """Pin this process (the load client) to the second CPU it may use; return the first,
    for the servers, or None when not pinning (``pin`` false, or fewer than two CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[1]})
    return cpus[0]


def python_env() -> dict[str, str]:
    """This environment with the repository on ``PYTHONPATH`` (so ``-m benchmarks.…`` works)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**unmeasured(os.environ), "PYTHONPATH": path}


def unmeasured(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without coverage's settings: a benchmark's processes are never traced by a
    coverage run they are started from (the tracer would be most of what they time)."""
    return {k: v for k, v in env.items() if not k.startswith("COVERAGE_")}


_LIBC = ctypes.CDLL(None)


class Processes:
    """Processes started for one measurement, each in a session of its own (so its
    children are stopped with it) and stopped when this process dies, pinned to a CPU,
    logging to a file of a temporary directory that :meth:`close` removes after
    stopping them, the last started first."""

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{re.sub(r'[^a-z0-9]+', '-', name.lower())}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def spawn(
        self, name: str, command: Sequence[str], cpu: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.dir / f"{name}-{len(self.logs)}.log"

        def setup() -> None:
            # A session of its own keeps it from a terminal's signals, so it must stop
            # when this process dies, even killed: PR_SET_PDEATHSIG.
            _LIBC.prctl(1, signal.SIGTERM)
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=unmeasured(os.environ if env is None else env),
                preexec_fn=setup,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        try:
            return self.logs[proc.pid].read_text(errors="replace")
        except OSError:
            return ""

    def check(self, proc: subprocess.Popen[bytes], what: str) -> None:
        """Raise if ``proc`` has exited, with the end of its log."""
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {self.log(proc)[-2000:]}")

    def wait_port(self, port: int, what: str, seconds: float = 30.0) -> None:
        """Until 127.0.0.1:``port`` accepts a connection; raise if a process exits first."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                for proc in self.procs:
                    self.check(proc, what)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start in {seconds:.0f} s") from None
                time.sleep(0.02)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM to ``proc``'s process group, SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)

    def pids(self, procs: Iterable[subprocess.Popen[bytes]] | None = None) -> list[int]:
        """The processes (all when None) with their descendants."""
        return [pid for p in (self.procs if procs is None else procs) for pid in descendants(p.pid)]

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_server() -> str | None:
    """The redis-server binary, or None."""
    found = shutil.which("redis-server")
    return found or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


def start_redis(procs: Processes, cpu: int | None, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free loopback port (no snapshots, no append-only
    file), pinned to ``cpu``; (its process, ``redis://127.0.0.1:PORT``)."""
    binary = redis_server()
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    throwaway = ("--save", "", "--appendonly", "no", "--dir", str(procs.dir))
    proc = procs.spawn(
        "redis", [binary, "--port", str(port), "--bind", "127.0.0.1", *throwaway, *options], cpu
    )
    procs.wait_port(port, "redis-server")
    return proc, f"redis://127.0.0.1:{port}"


def start_redis_cluster(
    procs: Processes, cpu: int | None, *options: str, masters: int = 3
) -> tuple[list[subprocess.Popen[bytes]], str]:
    """A throwaway Redis Cluster of ``masters`` redis-servers (``--cluster-enabled yes``,
    joined with ``redis-cli --cluster create``), pinned to ``cpu``; (its processes,
    ``redis+cluster://…``)."""
    binary, cli = redis_server(), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are not installed (apt-get install redis-server)")
    nodes, addresses = [], []
    for index in range(masters):
        port = free_port(also=10_000)  # a node's cluster bus is its port + 10000
        node_dir = procs.dir / f"cluster-{index}"
        node_dir.mkdir()
        throwaway = ("--save", "", "--appendonly", "no", "--dir", str(node_dir))
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", *throwaway, *cluster, *options]
        nodes.append(procs.spawn("redis", command, cpu))
        addresses.append(f"127.0.0.1:{port}")
    for address in addresses:
        procs.wait_port(int(address.rpartition(":")[2]), "redis-server")
    create = [cli, "--cluster", "create", *addresses, "--cluster-yes"]
    subprocess.run(create, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    deadline = time.monotonic() + 30
    for address in addresses:
        info = [cli, "-p", address.rpartition(":")[2], "cluster", "info"]
        while b"cluster_state:ok" not in subprocess.run(info, capture_output=True, timeout=10).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up in 30 s")
            time.sleep(0.05)
    return nodes, "redis+cluster://" + ",".join(addresses)


# -- CPU and memory from /proc ----------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nginx's worker, a prefork worker's pool)."""
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        with suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) the processes have used; those gone count 0."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def memory(pids: Iterable[int], field: str = "VmRSS") -> int:
    """Bytes of ``field`` (``VmRSS``; ``VmHWM``: the peak) summed over the processes."""
    total = 0
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
    return total


def own_cpu() -> float:
    """CPU seconds of this process (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the machine's processes have run (user, nice, system) and the
    seconds the hypervisor gave to other machines (steal), from ``/proc/stat``."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return sum(values[:3]) / CLK_TCK, values[7] / CLK_TCK


def wait_quiet(max_wait: float, limit_pct: float = 25.0, sample: float = 0.5) -> float:
    """Wait up to ``max_wait`` seconds for the other processes to use less than
    ``limit_pct`` % of a core (other jobs share these CPUs); the last sample."""
    deadline = time.monotonic() + max_wait
    while True:
        before, mine = machine_cpu()[0], own_cpu()
        time.sleep(sample)
        others = 100 * (machine_cpu()[0] - before - (own_cpu() - mine)) / sample
        if others < limit_pct or time.monotonic() + sample > deadline or math.isnan(others):
            return max(0.0, others)


class Window:
    """Wall time and CPU over one measurement: the server's (``cpu``, of which
    ``helper_cpu``, e.g. its redis-server), this process's, and what the rest of the
    machine used meanwhile."""

    def __init__(self, cpu: Callable[[], float], helper_cpu: Callable[[], float] = lambda: 0.0) -> None:
        self.cpu, self.helper_cpu = cpu, helper_cpu
        self.wall0, self.server0, self.helpers0 = time.monotonic_ns(), cpu(), helper_cpu()
        self.client0, self.machine0 = own_cpu(), machine_cpu()

    def close(
        self, end_ns: int | None = None, start_ns: int | None = None, other_client_cpu: float = 0.0
    ) -> dict[str, float]:
        """The measurement from ``start_ns`` (or the window's start) to ``end_ns`` (or now);
        ``other_client_cpu``: CPU seconds of the client's other processes."""
        end = end_ns if end_ns is not None else time.monotonic_ns()
        wall = max((end - (start_ns if start_ns is not None else self.wall0)) / 1e9, 1e-9)
        server_cpu = self.cpu() - self.server0
        helper_cpu = self.helper_cpu() - self.helpers0
        client_cpu = own_cpu() - self.client0 + other_client_cpu
        machine = machine_cpu()
        others = machine[0] - self.machine0[0] - server_cpu - client_cpu
        return {
            "seconds": wall,
            "server_cpu": server_cpu,
            "helper_cpu": helper_cpu,
            "client_cpu": client_cpu,
            # Percent of one core: from 0 to 200 on two.
            "server_cpu_pct": 100 * server_cpu / wall,
            "helper_cpu_pct": 100 * helper_cpu / wall,
            "client_cpu_pct": 100 * client_cpu / wall,
            "other_cpu_pct": max(0.0, 100 * others / wall),
            "steal_pct": 100 * (machine[1] - self.machine0[1]) / wall,
        }


# -- statistics -------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nan when there are none)."""
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else float("nan")


def percentiles(samples_ns: Iterable[int]) -> dict[str, float]:
    """p50 and p99 in milliseconds of samples in nanoseconds."""
    ordered = sorted(samples_ns)
    return {"p50_ms": percentile(ordered, 0.50) / 1e6, "p99_ms": percentile(ordered, 0.99) / 1e6}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result of repeated runs: the median of each number (the last run's other
    values); failed runs are left out unless every run failed."""
    ok = [r for r in runs if "error" not in r] or runs
    merged: dict[str, Any] = {}
    for key in ok[0]:
        values = [r[key] for r in ok if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
        merged[key] = statistics.median(values) if len(values) == len(ok) else ok[-1][key]
    merged["runs"] = len(ok)
    return merged


def ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom and not math.isnan(top) and not math.isnan(bottom) else float("nan")


# -- reports ----------------------------------------------------------------------------


def number(value: float, suffix: str = "") -> str:
    """Four significant digits, or ``-`` for a value not measured."""
    return "-" if math.isnan(value) else f"{value:.4g}{suffix}"


def table(rows: Sequence[Sequence[str]], indent: int = 2, left: int = 1) -> str:
    """Aligned columns: the first ``left`` to the left, the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of Python packages (``-`` for those missing) and of redis-server."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    binary = redis_server()
    found["redis-server"] = (
        command_output(binary, "--version").split("v=", 1)[-1].split()[0] if binary else "-"
    )
    return found


def command_output(*command: str) -> str:
    """What ``command`` prints (stdout and stderr), ``-`` when it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "-"
    return (done.stdout + done.stderr).strip() or "-"


def environment(found_versions: dict[str, str]) -> dict[str, Any]:
    """The machine and the versions measured; printed on one line by every benchmark."""
    cpuinfo = ""
    with suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    model = names[0] if names else ""
    env = {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": found_versions,
    }
    print(
        f"{env['nproc']} CPUs ({model}), Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in found_versions.items()),
        flush=True,
    )
    return env


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n")


def common_arguments(parser: argparse.ArgumentParser, quiet_wait: float | None) -> None:
    """``--smoke``, ``--quick``, ``--no-pin``, ``--json`` and, with a default, ``--quiet-wait``."""
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="smaller counts")
    level.add_argument(
        "--smoke", action="store_true", help="the smallest counts: checks the harness, measures nothing"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server side and the client to separate CPUs"
    )
    if quiet_wait is not None:
        parser.add_argument(
            "--quiet-wait",
            type=float,
            default=quiet_wait,
            help="seconds to wait before each run for other processes to use < 25%% of a core (0: never)",
        )
    parser.add_argument("--json", type=Path, help="write the environment and the results here")


def level(args: argparse.Namespace) -> str:
    """``full``, ``quick`` or ``smoke``, from :func:`common_arguments`."""
    return "smoke" if args.smoke else "quick" if args.quick else "full"


# -- profiles -------------------------------------------------------------------------


@asynccontextmanager
async def profiled(pid: int | None, stem: Path | None) -> AsyncIterator[None]:
    """py-spy on process ``pid`` (250 Hz) while the block runs: collapsed stacks into
    ``<stem>.txt``, their breakdown into ``<stem>-summary.txt``. Nothing without both."""
    if pid is None or stem is None:
        yield
        return
    raw = stem.with_suffix(".txt")
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        *("record", "--pid", str(pid), "--rate", "250", "--format", "raw"),
        *("--nonblocking", "--output", str(raw)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(spy.wait(), 10)
        except TimeoutError:
            spy.kill()
            await spy.wait()
        if raw.exists():
            stem.with_name(stem.name + "-summary.txt").write_text(summarize(raw.read_text()))


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    "sse_tasks",
    "sse_starlette",
    "starlette",
    "uvicorn",
    "anyio",
    "redis",
    "asyncio",
    "uvloop",
    "httptools",
    "orjson",
    "aiohttp",
)


def package(path: str) -> str:
    """The package a frame's file belongs to (``sse_tasks/web``: the subpackage)."""
    parts = path.replace("\\", "/").split("/")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in _PACKAGES:
            if parts[index] == "sse_tasks" and index + 2 < len(parts):
                return f"sse_tasks/{parts[index + 1]}"
            return parts[index]
    return "other" if path else "native"


def summarize(stacks: str, top: int = 25) -> str:
    """Where the samples of py-spy's collapsed ``stacks`` end (self time by package and
    by function) and which functions hold them (inclusive, once per stack)."""
    total = 0
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in stacks.splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for text in body.split(";")[1:] or body.split(";"):  # [0] is the thread
            match = _FRAME.match(text.strip())
            if match is None:
                frames.append((text.strip(), ""))
            else:
                short = "/".join(match["file"].split("/")[-2:])
                frames.append((f"{match['func']} ({short})", package(match["file"])))
        leaf, leaf_pkg = frames[-1]
        self_pkg[leaf_pkg] += n
        self_fn[leaf] += n
        for name in {name for name, _ in frames}:
            inclusive[name] += n
    if not total:
        return "no samples\n"
    out = [f"{total} samples"]
    for title, counter, limit in (
        ("self time by package", self_pkg, 15),
        ("self time by function", self_fn, top),
        ("inclusive time by function", inclusive, top),
    ):
        out.append(f"\n{title}")
        out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(limit)]
    return "\n".join(out) + "\n"


# -- the engine scenario: a task engine's worker with ÷ without the sse_tasks hook -----------


@dataclass(frozen=True)
class EngineScale:
    tasks: int = 2000
    repeat: int = 3
    warmup: int = 50
    followers: int = 100
    latency_tasks: int = 200
    timeout: float = 120.0
    #: Nothing is measured (``--smoke``): a worker is killed once its run is over, not
    #: given time to exit, and the delay is taken on the last hooked throughput worker
    #: (started recording stamps) rather than on one more.
    smoke: bool = False

    def grace(self, seconds: float) -> float:
        """How long a stopped worker may take to exit: ``seconds``, none in a smoke run."""
        return 0.0 if self.smoke else seconds


ENGINE_SCALES = {
    "full": EngineScale(),
    "quick": EngineScale(tasks=500, latency_tasks=50),
    "smoke": EngineScale(
        tasks=10, repeat=1, warmup=2, followers=3, latency_tasks=3, timeout=30.0, smoke=True
    ),
}
#: The environment variable a benchmark worker reads: CPU milliseconds each task spends.
WORK_ENV = "BENCH_WORK_MS"
#: The hash (on the stack's ``stamps_url``) where a worker records when each task ended,
#: ``time.monotonic_ns()`` by task id, taken before the hook publishes its end.
STAMPS_KEY = "bench:task_success_ns"
#: The environment variable holding the hub's Redis: a worker connects its hook when set.
HUB_ENV = "BENCH_SSE_TASKS_BROKER"
#: The environment variable holding a Redis URL: a worker records success stamps there.
STAMPS_ENV = "BENCH_SUCCESS_STAMPS"


def busy(ms: float) -> None:
    """Spend ``ms`` milliseconds of this thread's CPU (a small real task)."""
    if ms > 0:
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass


class EngineStack:
    """A redis-server (the hub on database 0, the engine on 1, success stamps on 2) and the
    processes started against it, pinned to ``cpu`` (redis-server to ``redis_cpu``)."""

    def __init__(self, cpu: int | None, redis_cpu: int | None = None) -> None:
        import redis

        self.cpu = cpu
        self.procs = Processes("engines")
        try:
            self.redis, url = start_redis(self.procs, cpu if redis_cpu is None else redis_cpu)
        except BaseException:
            self.procs.close()
            raise
        self.hub_url, self.engine_url, self.stamps_url = (f"{url}/{db}" for db in (0, 1, 2))
        self.dbs = [redis.Redis.from_url(u) for u in (self.hub_url, self.engine_url, self.stamps_url)]
        self.hub = self.dbs[0]

    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def env(self, **extra: str) -> dict[str, str]:
        """This interpreter's environment without any engine's or the hub's settings."""
        ours = ("BENCH_", "SSE_TASKS_", "DRAMATIQ_", "dramatiq_", "ARQ_", "TASKIQ_", "RQ_", "HUEY_")
        env = {k: v for k, v in python_env().items() if not k.startswith(ours)}
        if os.environ.get(WORK_ENV):
            env[WORK_ENV] = os.environ[WORK_ENV]
        return {**env, **extra}

    def worker_env(self, hooks: bool, stamps: bool, **extra: str) -> dict[str, str]:
        """A worker's environment: :meth:`env` with ``extra``, the hub's Redis when it runs
        the hook, where to record success stamps when it does."""
        env = self.env(**extra)
        if hooks:
            env[HUB_ENV] = self.hub_url
        if stamps:
            env[STAMPS_ENV] = self.stamps_url
        return env

    def wait_log(self, proc: subprocess.Popen[bytes], needle: str, what: str, timeout: float = 60.0) -> None:
        """Wait until ``proc`` has logged ``needle``."""
        deadline = time.monotonic() + timeout
        while needle not in self.procs.log(proc):
            self.procs.check(proc, what)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} never logged {needle!r}")
            time.sleep(0.05)

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self.procs.close()


class Engine(Protocol):
    """One engine in the scenario: made per throughput series, given the stack."""

    name: str

    def worker(self, hooks: bool, stamps: bool = False) -> subprocess.Popen[bytes]:
        """Start a worker (with the hook or not; recording success stamps), ready to work."""
        ...

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        """Send ``tasks`` tasks with the engine's own API and wait until every one ran."""
        ...

    def send_one(self) -> str:
        """Send one task (to a hooked worker); its id (the sse_tasks task id)."""
        ...

    def serve_command(self, port: int) -> list[str]:
        """The command serving a ``TaskHub`` on this engine on ``port``."""
        ...

    def server_env(self) -> dict[str, str]:
        """What that command needs in its environment."""
        ...

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        """When each of these tasks ended on the worker (``time.monotonic_ns()``, taken
        before the hook published it): :func:`stored_stamps` for most engines."""
        ...

    def close(self) -> None: ...


def stored_stamps(s: EngineStack, ids: list[str], timeout: float) -> dict[str, int]:
    """The success stamps a worker wrote to :data:`STAMPS_KEY` (waiting for all ``ids``)."""
    deadline = time.monotonic() + timeout
    while True:
        stamps = {k.decode(): int(v) for k, v in s.dbs[2].hgetall(STAMPS_KEY).items()}
        if all(i in stamps for i in ids) or time.monotonic() > deadline:
            return stamps
        time.sleep(0.05)


class AsyncEngine:
    """The part of an asyncio engine's adapter (arq, taskiq) that only names differ in: a
    subclass sends with :meth:`send` and starts its worker; the hub it serves is
    ``hub_app`` (``module:hub``, served by ``sse-tasks serve --app``), given the engine's
    Redis in ``engine_env``."""

    name: str
    hub_app: str
    engine_env: str

    def __init__(self, s: EngineStack) -> None:
        self.s = s

    async def send(self, count: int, wait: float | None) -> list[str]:
        """Send ``count`` tasks with the engine's own API; their ids, once every one ran
        if ``wait`` (seconds at most) is given."""
        raise NotImplementedError

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        asyncio.run(self.send(tasks, timeout))

    def send_one(self) -> str:
        return asyncio.run(self.send(1, None))[0]

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "sse_tasks", "serve", "--app", self.hub_app,
            "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip

    def server_env(self) -> dict[str, str]:
        return {self.engine_env: self.s.engine_url, HUB_ENV: self.s.hub_url}

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        return stored_stamps(self.s, ids, timeout)

    def close(self) -> None:
        pass


def _check_hub(s: EngineStack, hooks: bool, tasks: int) -> None:
    """Hooked: the hub's Redis holds every task finished; else it holds nothing."""
    deadline = time.monotonic() + 10
    while True:
        if not hooks:
            if s.hub.dbsize():
                raise RuntimeError("hook off, yet the hub's Redis holds keys")
            return
        finished = s.hub.zcard("sse_tasks:finished")
        if finished == tasks:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{finished} of {tasks} tasks finished on the hub")
        time.sleep(0.01)


def engine_throughput(
    s: EngineStack, engine: Engine, scale: EngineScale, quiet: float, keep: bool = False
) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """Tasks per second without and with the hook, alternately, ``scale.repeat`` times: a
    fresh warmed-up worker per run; medians, and the ratio of each repetition. ``keep``:
    the last worker (hooked) records success stamps and is left running, and returned."""
    runs: list[dict[str, Any]] = []
    kept = None
    for rep in range(scale.repeat):
        for hooks in (False, True):
            last = keep and hooks and rep == scale.repeat - 1
            s.flush()
            worker = engine.worker(hooks, stamps=last)
            try:
                engine.run(hooks, scale.warmup, timeout=60)
                if quiet > 0:
                    wait_quiet(quiet)
                cpu, redis_cpu = cpu_seconds(s.procs.pids([worker])), cpu_seconds([s.redis.pid])
                started = time.monotonic()
                engine.run(hooks, scale.tasks, scale.timeout)
                seconds = time.monotonic() - started
                cpu = cpu_seconds(s.procs.pids([worker])) - cpu
                redis_cpu = cpu_seconds([s.redis.pid]) - redis_cpu
                _check_hub(s, hooks, scale.warmup + scale.tasks)
            finally:
                # Measured: no need to wait long for it (RQ 3 can hang 15 s in its
                # teardown, joining its pub/sub thread, when stopped soon after start).
                # Kept or not, an error leaves it to the stack's close.
                if not last:
                    s.procs.stop(worker, grace=scale.grace(2.0))
            if last:
                kept = worker
            run = {
                "hooks": hooks,
                "tasks": scale.tasks,
                "seconds": seconds,
                "tasks_per_s": scale.tasks / seconds,
                "worker_cpu_ms_per_task": cpu * 1000 / scale.tasks,
                "redis_cpu_ms_per_task": redis_cpu * 1000 / scale.tasks,
            }
            runs.append(run)
            label = "with" if hooks else "without"
            print(
                f"  {engine.name} {label:7} #{rep + 1}: {run['tasks_per_s']:7.0f} tasks/s, CPU per task: "
                f"worker {run['worker_cpu_ms_per_task']:.2f} ms, redis {run['redis_cpu_ms_per_task']:.2f} ms",
                flush=True,
            )
    without = statistics.median(r["tasks_per_s"] for r in runs if not r["hooks"])
    with_ = statistics.median(r["tasks_per_s"] for r in runs if r["hooks"])
    cpu_without = statistics.median(r["worker_cpu_ms_per_task"] for r in runs if not r["hooks"])
    cpu_with = statistics.median(r["worker_cpu_ms_per_task"] for r in runs if r["hooks"])
    redis_without = statistics.median(r["redis_cpu_ms_per_task"] for r in runs if not r["hooks"])
    redis_with = statistics.median(r["redis_cpu_ms_per_task"] for r in runs if r["hooks"])
    pairs = zip(runs[::2], runs[1::2], strict=True)
    return {
        "runs": runs,
        "tasks_per_s": {"without": without, "with": with_, "ratio": ratio(with_, without)},
        "worker_cpu_ms_per_task": {"without": cpu_without, "with": cpu_with},
        "redis_cpu_ms_per_task": {"without": redis_without, "with": redis_with},
        "ratio_per_repetition": [b["tasks_per_s"] / a["tasks_per_s"] for a, b in pairs],
    }, kept


async def _follow_engine(
    port: int, send: Callable[[], str], followers: int, tasks: int, timeout: float
) -> tuple[list[Any], list[str]]:
    """``followers`` streams on ``/events``; ``tasks`` tasks sent one at a time, each once
    every follower has seen the one before succeed."""
    from .client import SucceededFollower

    loop = asyncio.get_running_loop()
    waiting: dict[str, list[Any]] = {}  # task id -> [followers still to see it, future]

    def on_seen(task_id: str) -> None:
        entry = waiting.get(task_id)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0 and not entry[1].done():
                entry[1].set_result(None)

    streams: list[SucceededFollower] = []
    for _ in range(followers):
        _, stream = await loop.create_connection(lambda: SucceededFollower(on_seen), "127.0.0.1", port)
        streams.append(stream)
    await asyncio.wait_for(asyncio.gather(*(f.opened for f in streams)), timeout)
    ids: list[str] = []
    pool = ThreadPoolExecutor(1)
    try:
        for _ in range(tasks):
            task_id = await loop.run_in_executor(pool, send)
            done: asyncio.Future[None] = loop.create_future()
            already = sum(task_id in f.seen for f in streams)
            waiting[task_id] = [followers - already, done]
            if already == followers:
                done.set_result(None)
            await asyncio.wait_for(done, timeout)
            ids.append(task_id)
    finally:
        pool.shutdown(wait=True)
        for stream in streams:
            stream.close()
    return streams, ids


def engine_latency(
    s: EngineStack, engine: Engine, scale: EngineScale, worker: subprocess.Popen[bytes] | None = None
) -> dict[str, Any]:
    """From the engine's success (the worker's stamp, taken before the hook publishes) to
    each of ``scale.followers`` streams seeing ``task.succeeded``: p50/p99 over all. On
    ``worker`` (hooked, recording stamps) if given, else on a fresh one."""
    if worker is None:
        s.flush()
        worker = engine.worker(True, stamps=True)
    port = free_port()
    server = s.procs.spawn("server", engine.serve_command(port), s.cpu, s.env(**engine.server_env()))
    try:
        s.procs.wait_port(port, "the hub's server")
        engine.run(True, min(20, scale.warmup), timeout=60)
        streams, ids = asyncio.run(
            _follow_engine(port, engine.send_one, scale.followers, scale.latency_tasks, scale.timeout)
        )
        stamps = engine.stamps(ids, scale.timeout)
    finally:
        s.procs.stop(worker, scale.grace(15.0))
        s.procs.stop(server)
    missing = [i for i in ids if i not in stamps]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no success time")
    samples = sorted(f.seen[i] - stamps[i] for i in ids for f in streams)
    return {
        "followers": scale.followers,
        "tasks": len(ids),
        "deliveries": len(samples),
        "p50_ms": percentile(samples, 0.5) / 1e6,
        "p99_ms": percentile(samples, 0.99) / 1e6,
        "max_ms": samples[-1] / 1e6,
    }


def run_engines(
    makers: dict[str, Callable[[EngineStack], Engine]],
    scale: EngineScale,
    work_ms: Sequence[float],
    *,
    pin: bool = True,
    quiet: float = 0.0,
    latency: bool = True,
    redis_on: str = "worker",
) -> dict[str, Any]:
    """Every engine of ``makers`` in one run on one redis-server: throughput for each
    ``work_ms``, then (``latency``) success → follower. ``redis_on``: the CPU redis-server
    shares, the worker's (``worker``: the hook's whole cost on one core) or the sender's
    (``client``: the worker's own, as where Redis is another host)."""
    started = time.monotonic()
    cpu = pin_client(pin)
    redis_cpu = min(os.sched_getaffinity(0)) if cpu is not None and redis_on == "client" else None
    s = EngineStack(cpu, redis_cpu)
    results: dict[str, Any] = {
        "scale": asdict(scale), "pinned": s.cpu is not None, "redis_on": redis_on, "engines": {},
    }  # fmt: skip
    try:
        for name, make in makers.items():
            found: dict[str, Any] = {"throughput": {}}
            kept = None
            for index, work in enumerate(work_ms):
                os.environ[WORK_ENV] = str(work)
                what = f"{scale.tasks} tasks of {work:g} ms, {scale.repeat} repetitions"
                print(f"== {name}: tasks per second, {what}")
                keep = latency and scale.smoke and index == len(work_ms) - 1
                engine = make(s)
                try:
                    found["throughput"][f"{work:g}ms"], kept = engine_throughput(
                        s, engine, scale, quiet, keep
                    )
                finally:
                    engine.close()
            os.environ.pop(WORK_ENV, None)
            if latency:
                what = f"{scale.followers} followers, {scale.latency_tasks} tasks"
                print(f"== {name}: success → task.succeeded, {what}")
                engine = make(s)
                try:
                    found["latency"] = engine_latency(s, engine, scale, kept)
                finally:
                    engine.close()
            results["engines"][name] = found
    finally:
        s.close()
    results["seconds"] = time.monotonic() - started
    return results


def print_engines(results: dict[str, Any]) -> None:
    """The throughput table and each engine's delay."""
    rows = [[
        "engine", "work per task", "without hook", "with hook", "with ÷ without",
        "worker CPU ms/task", "redis CPU ms/task",
    ]]  # fmt: skip
    for name, found in results["engines"].items():
        for work, t in found["throughput"].items():
            v, cpu, rcpu = t["tasks_per_s"], t["worker_cpu_ms_per_task"], t["redis_cpu_ms_per_task"]
            rows.append([
                name, work, f"{v['without']:,.0f}", f"{v['with']:,.0f}", number(v["ratio"], "x"),
                f"{cpu['without']:.2f} → {cpu['with']:.2f}", f"{rcpu['without']:.2f} → {rcpu['with']:.2f}",
            ])  # fmt: skip
    print(f"\nredis-server on the {results.get('redis_on', 'worker')}'s CPU")
    print()
    print(table(rows, indent=0, left=2))
    for name, found in results["engines"].items():
        lat = found.get("latency")
        if lat:
            print(
                f"{name}: success → task.succeeded at {lat['followers']} followers ({lat['tasks']} tasks): "
                f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.1f} ms"
            )


def engine_main(
    argv: Sequence[str], makers: dict[str, Callable[[EngineStack], Engine]], prog: str, description: str
) -> int:
    """The command line of an engine scenario: ``--engines``, the scale, ``--work-ms``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    common_arguments(parser, quiet_wait=3.0)
    parser.add_argument("--engines", help=f"comma-separated, of {', '.join(makers)} (default: all)")
    parser.add_argument("--tasks", type=int, help="tasks per throughput run")
    parser.add_argument("--repeat", type=int, help="repetitions of without/with (medians)")
    parser.add_argument("--followers", type=int, help="followers on /events for the delay")
    parser.add_argument("--latency-tasks", type=int, help="tasks for the delay")
    parser.add_argument("--work-ms", default="0,1", help="CPU ms per task, comma-separated (default 0,1)")
    parser.add_argument("--no-latency", action="store_true", help="throughput only")
    parser.add_argument(
        "--redis-on",
        choices=("worker", "client"),
        default="worker",
        help="the CPU redis-server shares: the worker's (default; the hook's whole cost on one core) "
        "or the sender's (the worker's own cost, as where Redis is another host)",
    )
    args = parser.parse_args(list(argv))
    names = [e.strip() for e in args.engines.split(",")] if args.engines else list(makers)
    unknown = [n for n in names if n not in makers]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(makers)}")
    changes = {
        "tasks": args.tasks,
        "repeat": args.repeat,
        "followers": args.followers,
        "latency_tasks": args.latency_tasks,
    }
    scale = replace(ENGINE_SCALES[level(args)], **{k: v for k, v in changes.items() if v is not None})
    work = [float(w) for w in args.work_ms.split(",") if w.strip()]
    env = environment(versions(("sse-tasks", *names, "redis", "hiredis", "uvicorn")))
    results = run_engines(
        {n: makers[n] for n in names}, scale, work, pin=not args.no_pin, quiet=args.quiet_wait,
        latency=not args.no_latency, redis_on=args.redis_on,
    )  # fmt: skip
    print_engines(results)
    print(f"\n{results['seconds']:.0f} s")
    write_json(args.json, {"environment": env, **results})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="The breakdown of a py-spy profile (``py-spy record --format raw``; "
        "``python -m benchmarks --profile DIR`` writes them).",
    )
    parser.add_argument("stacks", type=Path)
    args = parser.parse_args(argv)
    sys.stdout.write(summarize(args.stacks.read_text(encoding="utf-8", errors="replace")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
