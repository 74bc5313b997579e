"""What Redis being unreachable means: which errors, the 503 they become, since when."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

import redis.exceptions

from ..._core.errors import Unavailable

T = TypeVar("T")


class NotServing(redis.exceptions.RedisError):
    """Redis answered that it cannot serve now, with an error redis-py has no class for
    (``BUSY``: a script runs too long; ``MISCONF``: writes refused after a failed save;
    ``NOREPLICAS``; before redis-py 6 also ``MASTERDOWN``, ``CLUSTERDOWN`` and
    ``TRYAGAIN``): see :func:`not_serving`."""


#: Errors that mean Redis cannot be reached or serve now (not that a command is wrong).
UNREACHABLE = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (restarting)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica during failover
    redis.exceptions.OutOfMemoryError,  # maxmemory reached with a no-eviction policy
    redis.exceptions.ClusterDownError,  # includes MasterDownError (a replica cut off)
    redis.exceptions.TryAgainError,
    redis.exceptions.NoPermissionError,  # an ACL denies a command the broker needs
    NotServing,
    OSError,
)

#: The first words of the error replies :class:`NotServing` stands for.
_NOT_SERVING = frozenset({"BUSY", "MISCONF", "NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"})


def not_serving(exc: redis.exceptions.ResponseError) -> redis.exceptions.RedisError:
    """``exc``, or a :class:`NotServing` (one of :data:`UNREACHABLE`) if its reply says
    Redis cannot serve now."""
    if str(exc).split(" ", 1)[0] in _NOT_SERVING:
        return NotServing(str(exc))
    return exc


def wrong_kind(exc: redis.exceptions.ResponseError) -> Unavailable | None:
    """The 503 for ``WRONGTYPE``: one of the broker's keys holds another kind of value
    (another program wrote it). Not an outage: nothing retries it, no wait ends it."""
    if not str(exc).startswith("WRONGTYPE"):
        return None
    message = f"a key of the task broker in Redis holds another kind of value (another program's?): {exc}"
    return Unavailable(message, code="broker_unavailable", retry_after=2)


def unavailable(exc: BaseException) -> Unavailable:
    """The 503 an unreachable Redis answers (``broker_unavailable``, ``Retry-After: 2``)."""
    message = f"the task broker (Redis) is unreachable: {exc}"
    return Unavailable(message, code="broker_unavailable", retry_after=2)


async def call(awaitable: Awaitable[T]) -> T:
    """Await a Redis command; unreachable Redis becomes :class:`Unavailable` (503)."""
    try:
        return await awaitable
    except UNREACHABLE as exc:
        raise unavailable(exc) from None
    except redis.exceptions.ResponseError as exc:
        if isinstance(not_serving(exc), NotServing):
            raise unavailable(exc) from None
        wrong = wrong_kind(exc)
        if wrong is not None:
            raise wrong from None
        raise


class Link:
    """Since when this process has been connected to Redis, or cut off from it."""

    def __init__(self) -> None:
        self.connected_since: float | None = None
        self.down_since: float | None = None

    def up(self) -> None:
        self.connected_since = time.monotonic()
        self.down_since = None

    def answered(self) -> None:
        """A command went through (the reader may still be reconnecting)."""
        self.down_since = None

    def down(self) -> None:
        """The reader lost its connection."""
        self.connected_since = None
        self.failed()

    def failed(self) -> float:
        """A command could not reach Redis: seconds since the outage began (noted once)."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        return now - self.down_since
