"""The demo tasks every sse-tasks server offers: ``sleep``, ``count`` and ``fail``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from .._core.context import TaskContext
    from .._hub import TaskHub

__all__ = ["register_demo_tasks"]


async def sleep(ctx: TaskContext, seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    await anyio.sleep(seconds)
    return {"slept": seconds}


async def count(ctx: TaskContext, n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` progress steps, ``interval`` seconds apart; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    for i in range(1, n + 1):
        await anyio.sleep(interval)
        ctx.progress(i / n, f"step {i} of {n}")
    return {"count": n}


async def fail(ctx: TaskContext, message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


def register_demo_tasks(hub: TaskHub) -> None:
    """Register ``sleep``, ``count`` and ``fail`` on ``hub``."""
    for func in (sleep, count, fail):
        hub.register(func)
