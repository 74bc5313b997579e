"""The demo tasks every sse-tasks server offers: ``sleep``, ``count``, ``fail`` and ``generate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from .._core.context import TaskContext
    from .._hub import TaskHub

__all__ = ["DEMO_TASKS", "register_demo_tasks"]

#: The names every sse-tasks server offers (the demo page starts them).
DEMO_TASKS = ("sleep", "count", "fail", "generate")


async def sleep(ctx: TaskContext, seconds: float = 1.0) -> dict[str, Any]:
    """Wait ``seconds``; result ``{"slept": seconds}``."""
    if not 0 <= seconds <= 86_400:
        raise ValueError("seconds must be from 0 to 86400")
    await anyio.sleep(seconds)
    return {"slept": seconds}


async def count(ctx: TaskContext, n: int = 10, interval: float = 0.1) -> dict[str, Any]:
    """``n`` progress steps, ``interval`` seconds apart, with the metadata
    ``{"done": i, "total": n}``; result ``{"count": n}``."""
    if not 0 <= n <= 100_000 or not 0 <= interval <= 3600:
        raise ValueError("n must be from 0 to 100000 and interval from 0 to 3600")
    ctx.metadata(done=0, total=n)
    for i in range(1, n + 1):
        await anyio.sleep(interval)
        ctx.metadata(done=i)
        ctx.progress(i / n, f"step {i} of {n}")
    return {"count": n}


async def fail(ctx: TaskContext, message: str = "boom") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards box and "
    "five jolly judges quiz the sphinx of black quartz about its vow"
).split()


def word(i: int) -> str:
    """The ``i``-th word of the text ``generate`` writes (deterministic)."""
    return _WORDS[(i * 7 + i // len(_WORDS)) % len(_WORDS)]


def generated_text(words: int) -> str:
    """The whole text ``generate`` writes with ``words`` words."""
    return "".join(f"{word(i)} " for i in range(words))


async def generate(ctx: TaskContext, words: int = 50, delay: float = 0.05) -> dict[str, Any]:
    """Write a deterministic text word by word (``ctx.output``), log a line every 10 words."""
    if not 0 <= words <= 1_000_000 or not 0 <= delay <= 60:
        raise ValueError("words must be from 0 to 1000000 and delay from 0 to 60")
    for i in range(words):
        if delay:
            await anyio.sleep(delay)
        elif i % 100 == 0:
            await anyio.lowlevel.checkpoint()  # let the output be published as it is written
        ctx.output(f"{word(i)} ")
        if (i + 1) % 10 == 0:
            ctx.log(f"{i + 1} of {words} words")
    return {"words": words}


def register_demo_tasks(hub: TaskHub) -> None:
    """Register ``sleep``, ``count``, ``fail`` and ``generate`` on ``hub`` (those it lacks)."""
    for func in (sleep, count, fail, generate):
        if func.__name__ not in hub.registry:
            hub.register(func)
