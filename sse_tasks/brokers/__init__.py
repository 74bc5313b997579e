"""Brokers hold task state and the event log; chosen by URL (``memory://``, ``redis://…``)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from .base import Broker, EventObserver
from .memory import MemoryBroker

__all__ = ["Broker", "EventObserver", "MemoryBroker", "broker_from_url"]

ENV_VAR = "SSE_TASKS_BROKER"
#: The URL schemes of the Redis broker (``+cluster``: on a Redis Cluster).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def is_redis_url(url: str) -> bool:
    """True for a URL of the Redis broker: ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://`` or ``rediss+cluster://``."""
    return urlsplit(url).scheme in REDIS_SCHEMES


def broker_from_url(url: str | None = None, **options: Any) -> Broker:
    """The broker for ``url`` (default: ``$SSE_TASKS_BROKER``, else ``memory://``).

    Raises ``ValueError`` for an unknown scheme.
    """
    url = url or os.environ.get(ENV_VAR) or "memory://"
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(**options)
    if scheme in REDIS_SCHEMES:
        try:
            from .redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ValueError(
                f"broker {url!r} needs the redis extra: pip install 'sse-tasks[redis]',"
                f" or '.[redis]' in a checkout ({exc})"
            ) from exc
        broker: Broker = RedisBroker(url, **options)
        return broker
    raise ValueError(
        f"unknown broker URL {url!r}: use memory://, redis://host:port/db or redis+cluster://host:port[,host:port…]"
    )
