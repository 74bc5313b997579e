"""HueyEngine's choice of tasks and ``connect``'s arguments (no consumer needed)."""

from __future__ import annotations

from typing import Any

import pytest

huey_api = pytest.importorskip("huey")

from sse_tasks.huey import HueyEngine, connect  # noqa: E402


def _app(name: str) -> Any:
    return huey_api.MemoryHuey(name, results=False)


def test_the_hub_offers_every_task_but_periodic_and_context_ones() -> None:
    app = _app("offers")

    @app.task(name="add")
    def add(a: int, b: int = 1) -> int:
        return a + b

    @app.task(context=True)
    def with_task(n: int, task: Any = None) -> int:
        return n

    @app.periodic_task(huey_api.crontab(minute="0"))
    def hourly() -> None:
        return None

    @app.task()
    def star(*args: Any) -> None:  # no signature the hub can check: not offered
        return None

    offered = dict(HueyEngine(app).registrations())
    assert offered == {"add": add.func}
    assert dict(HueyEngine(app, [add]).registrations()) == {"add": add.func}
    with pytest.raises(ValueError, match="context=True"):
        list(HueyEngine(app, [with_task]).registrations())
    other = _app("other")
    foreign = other.task(name="add")(add.func)
    with pytest.raises(ValueError, match="not this Huey app's"):
        list(HueyEngine(app, [foreign]).registrations())
    with pytest.raises(ValueError, match="positive"):
        HueyEngine(app, send_timeout=0)


def test_connect_needs_the_hubs_redis_and_hooks_an_app_once() -> None:
    app = _app("connected")
    with pytest.raises(ValueError, match="Redis broker URL"):
        connect(app, "memory://")
    with pytest.raises(ValueError, match="Redis URL: Invalid SSL"):  # told here, not per task
        connect(app, "rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus")
    hook = connect(app, "redis://127.0.0.1:1/0")  # nothing listens: nothing is written yet
    assert connect(app, "redis://127.0.0.1:1/0") is hook
    hook.close()
