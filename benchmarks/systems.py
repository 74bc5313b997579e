"""The systems compared, what each needs installed, and their server processes.

==================  ==================================================================
``sse_tasks``        sse_tasks on ``memory://`` under uvicorn
``sse_tasks+redis``  sse_tasks on ``redis://``: a ``redis-server`` of its own on a free
                     loopback port, on the server's CPU; its CPU and RSS count as the
                     server's
``nchan``            nginx with the nchan module (Debian ``nginx-light`` and
                     ``libnginx-mod-nchan``), one worker process
``aiohttp-sse``      aiohttp + aiohttp-sse (``benchmarks/aiohttp_app.py``)
``sse-starlette``    Starlette + sse-starlette under uvicorn, the plain baseline
==================  ==================================================================

:func:`prepare` installs what is missing (pip for aiohttp, aiohttp-sse and hiredis;
apt-get, as root, for nginx, nchan and redis-server) unless told not to, and says in
one line why a system is skipped when it still cannot run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")

SYSTEMS = ("sse_tasks", "sse_tasks+redis", "nchan", "aiohttp-sse", "sse-starlette")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
_APT_TIMEOUT = 600.0
_PIP_TIMEOUT = 300.0


# -- what each system needs -------------------------------------------------------------


def _has_modules(*names: str) -> bool:
    importlib.invalidate_caches()
    return all(importlib.util.find_spec(name) is not None for name in names)


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _redis_server() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def redis_server_command(binary: str, port: int, workdir: Path) -> list[str]:
    """A throwaway redis-server on 127.0.0.1:``port``: no snapshots, no append-only file."""
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]  # fmt: skip


def _pip_install(*packages: str) -> bool:
    print(f"setup: pip install {' '.join(packages)}", flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *packages],
            timeout=_PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


_apt_updated = False


def _apt_install(*packages: str) -> bool:
    global _apt_updated
    print(f"setup: apt-get install {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if not _apt_updated:
            subprocess.run(
                ["apt-get", "update", "-qq"],
                env=env,
                timeout=_APT_TIMEOUT,
                check=False,
                stdout=subprocess.DEVNULL,
            )
            _apt_updated = True
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            env=env,
            timeout=_APT_TIMEOUT,
            check=False,
            stdout=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def missing(system: str) -> str | None:
    """Why ``system`` cannot run here, or None."""
    if system == "aiohttp-sse" and not _has_modules("aiohttp", "aiohttp_sse"):
        return "aiohttp and aiohttp-sse are not installed (pip install aiohttp aiohttp-sse)"
    if system == "nchan" and (_nginx() is None or not NCHAN_MODULE.exists()):
        return "nginx with the nchan module is not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if system == "sse_tasks+redis":
        if _redis_server() is None:
            return "redis-server is not installed (apt-get install redis-server)"
        if not _has_modules("redis"):
            return "the redis client is not installed (pip install 'sse-tasks[redis]')"
    if system not in SYSTEMS:
        return f"unknown system {system!r}"
    return None


def prepare(systems: tuple[str, ...], install: bool = True) -> dict[str, str]:
    """Install what the systems need (when ``install``); {system: why skipped} for the rest."""
    if install:
        if "aiohttp-sse" in systems and missing("aiohttp-sse"):
            _pip_install("aiohttp", "aiohttp-sse")
        if "sse_tasks+redis" in systems:
            if not _has_modules("redis") or not _has_modules("hiredis"):
                _pip_install("redis[hiredis]>=5.0")  # what the ``redis`` extra installs
            if _redis_server() is None and _can_apt():
                _apt_install("redis-server")
        if "nchan" in systems and missing("nchan"):
            if _can_apt():
                _apt_install("nginx-light", "libnginx-mod-nchan")
    skipped = {}
    for system in systems:
        reason = missing(system)
        if reason is not None:
            if system == "nchan" and install and not _can_apt():
                reason += "; installing it needs root and apt-get"
            skipped[system] = reason
            print(f"skipped: {system}: {reason}", flush=True)
    return skipped


def _run_text(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    return (done.stdout + done.stderr).strip() or "-"


def versions() -> dict[str, str]:
    """Versions of everything measured: Python packages, nginx, nchan, redis-server."""
    found = {}
    for name in (
        "sse-tasks",
        "starlette",
        "sse-starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "anyio",
        "orjson",
        "aiohttp",
        "aiohttp-sse",
        "redis",
        "hiredis",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    nginx = _nginx()
    found["nginx"] = _run_text(nginx, "-v").rsplit("/", 1)[-1] if nginx else "-"
    if shutil.which("dpkg-query"):
        found["nchan"] = _run_text("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan")
        if "no packages found" in found["nchan"]:
            found["nchan"] = "-"
    redis = _redis_server()
    found["redis-server"] = _run_text(redis, "--version").split("v=", 1)[-1].split()[0] if redis else "-"
    return found


# -- server processes -------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise the open-files limit to its hard maximum (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, procs: list[subprocess.Popen[bytes]], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


def _pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


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
    """One system's server: its processes, pinned to ``cpu``; CPU and RSS summed over them."""

    def __init__(self, system: str, cpu: int | None) -> None:
        self.system = system
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{system.replace('+', '-')}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []
        try:
            if system == "nchan":
                self._start_nchan(cpu)
            else:
                self._start_python(cpu)
        except BaseException:
            self.stop()
            raise

    def _spawn(
        self,
        name: str,
        command: list[str],
        cpu: int | None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = self.dir / f"{name}.log"
        self._logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pin(cpu), cwd=cwd, env=env
            )
        self.procs.append(proc)
        return proc

    def _start_python(self, cpu: int | None) -> None:
        app = "sse_tasks" if self.system.startswith("sse_tasks") else self.system
        command = [sys.executable, "-m", "benchmarks.server", app, str(self.port)]
        if self.system == "sse_tasks+redis":
            redis_port = free_port()
            redis = _redis_server()
            assert redis is not None
            self._spawn(
                "redis", [*redis_server_command(redis, redis_port, self.dir), "--maxclients", "1000"], cpu
            )
            _wait_port(redis_port, self.procs, "redis-server")
            command += ["--broker", f"redis://127.0.0.1:{redis_port}/0"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        # Pinned by the server itself (``--cpu``): it imports first.
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self._spawn("server", command, None, cwd=ROOT, env=env)
        _wait_port(self.port, self.procs, f"the {self.system} server")

    def _start_nchan(self, cpu: int | None) -> None:
        nginx = _nginx()
        assert nginx is not None
        (self.dir / "body").mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                dir=self.dir,
                module=NCHAN_MODULE,
                port=self.port,
                nofile=raise_nofile(),
                connections=raise_nofile() - 100,
            )
        )
        self._logs.append(self.dir / "error.log")
        self._spawn("nginx", [nginx, "-c", str(conf), "-p", str(self.dir)], cpu)
        _wait_port(self.port, self.procs, "nginx")

    @property
    def main_pid(self) -> int | None:
        """The Python server's process (None for nginx)."""
        if self.system == "nchan" or not self.procs:
            return None
        return self.procs[-1].pid

    def pids(self) -> list[int]:
        """Every process of the server: for nginx the master and its workers."""
        pids = [p.pid for p in self.procs if p.poll() is None]
        if self.system == "nchan":
            for pid in list(pids):
                try:
                    pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
                except OSError:
                    pass
        return pids

    def helper_cpu(self) -> float:
        """CPU seconds of the processes a Python server started with it (its redis-server)."""
        main = self.main_pid
        return self.cpu([p for p in self.pids() if p != main]) if main is not None else 0.0

    def cpu(self, pids: list[int] | None = None) -> float:
        """CPU seconds (user + system) the server's processes (or ``pids``) have used."""
        total = 0.0
        for pid in self.pids() if pids is None else pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return total

    def rss(self) -> int:
        """Resident memory of the server's processes, in bytes."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the server first, then its redis
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._report_logs()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _report_logs(self) -> None:
        """Print what the server logged, but for the demo task's expected failures."""
        lines: list[str] = []
        for log in self._logs:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if not line.strip() or "task failed id=" in line or log.name == "redis.log":
                    continue
                if "[notice]" in line or ("Using " in line and "shared memory for nchan" in line):
                    continue
                lines.append(line)
        self._logs = []
        if lines:
            print(
                f"  [{self.system}] server log: {len(lines)} lines, the last: {lines[-1][:300]}", flush=True
            )

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
