"""Limits on streams: per client address, and a maximum lifetime after which a stream ends.

A stream that reaches its lifetime ends between two chunks (every chunk is whole
frames), so the client reconnects with ``Last-Event-ID`` and resumes exactly there.
Lifetimes are spread by up to 10 % so streams opened together do not all reconnect
together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import anyio

from .._core.errors import Unavailable


class ClientSlots:
    """Open streams per client address; ``limit`` None means no limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> Callable[[], None]:
        """Take a slot for ``client`` and return its release (call it once).

        Raises :class:`Unavailable` (``too_many_streams_per_client``) when full.
        """
        count = self._open.get(client, 0)
        if self.limit is not None and count >= self.limit:
            raise Unavailable(
                f"too many open streams from this address ({self.limit})",
                code="too_many_streams_per_client",
                retry_after=5,
            )
        self._open[client] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._open[client] - 1
            if left:
                self._open[client] = left
            else:
                del self._open[client]

        return release

    def __len__(self) -> int:
        """Client addresses with an open stream."""
        return len(self._open)


def lifetime_deadline(lifetime: float | None) -> float:
    """The loop time a stream opened now must end at (``inf`` without a lifetime)."""
    if lifetime is None:
        return math.inf
    spread = lifetime * 0.1 * random.random()  # noqa: S311 - jitter, not a secret
    return anyio.current_time() + lifetime - spread
