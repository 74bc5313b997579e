"""The tokens that make a retried write idempotent, without a system call per write."""

from __future__ import annotations

import itertools
import os
import secrets


class Tokens:
    """Unique write tokens: a random prefix per process (drawn again after a ``fork``, so a
    forked worker never repeats its parent's) and a counter. Drawing 8 random bytes per
    write cost a ``getrandom`` call each time (a quarter of a worker hook's CPU, profiled on
    a busy machine); this costs a ``getpid``. Safe to share between threads."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._prefix = ""
        self._base = 0
        self._count = itertools.count()

    def take(self) -> tuple[str, str]:
        """A fresh token, and a fresh 8-hex-digit epoch to start a history with if none exists."""
        pid = os.getpid()
        if pid != self._pid:
            self._prefix, self._base = secrets.token_hex(6), secrets.randbits(32)
            self._count = itertools.count()
            self._pid = pid
        n = next(self._count)
        return f"{self._prefix}{n:x}", f"{(self._base + n) & 0xFFFFFFFF:08x}"
