"""Loopback ports for the servers the benchmarks and the tests start, without races.

Binding port 0, closing the socket and handing the number to a server lets another process
that does the same at the same moment, or a client socket (the kernel's ephemeral range
serves both), take that port first: the server then fails to bind, or worse, a check that
it listens finds the other process's server. A port from here is below the ephemeral
range (no client socket is ever given it) and reserved, for the life of the process that
took it, by a lock on a file every process using this module shares.
"""

from __future__ import annotations

import atexit
import fcntl
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

_LOCKS = Path(tempfile.gettempdir()) / "sse-tasks-ports"
_LOWEST = 20_000
#: The reservations this process holds (closed, and so released, when it exits).
_held: list[IO[bytes]] = []


@atexit.register
def _release() -> None:
    """Close the reservations as the process exits, rather than leave each to the garbage
    collector, which warns about every file left open (``ResourceWarning``)."""
    while _held:
        _held.pop().close()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> IO[bytes] | None:
    lock = (_LOCKS / str(port)).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    if _bindable(port):
        return lock
    lock.close()
    return None


def free_port(*, also: int | None = None) -> int:
    """A loopback port no server listens on, reserved for this process: no other process
    using this function gets it while this one lives. ``also``: the port that many above
    it is free and reserved too (a Redis Cluster node's bus port is its port + 10000)."""
    _LOCKS.mkdir(exist_ok=True)
    highest = max(_ephemeral_start() - 1 - (also or 0), _LOWEST + 1_000)
    generator = random.Random()  # seeded from os.urandom: processes do not follow each other
    for _ in range(1_000):
        port = generator.randrange(_LOWEST, highest)
        lock = _reserve(port)
        if lock is None:
            continue
        if also is not None:
            other = _reserve(port + also)
            if other is None:
                lock.close()
                continue
            _held.append(other)
        _held.append(lock)
        return port
    raise RuntimeError("no free loopback port found")
