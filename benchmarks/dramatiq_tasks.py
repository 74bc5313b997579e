"""Dramatiq in the engine scenario (``benchmarks.harness``): ``python -m benchmarks.engines
dramatiq [--quick|--smoke]``.

``dramatiq benchmarks.dramatiq_app`` (one process, two threads) with and without the
``StatusMiddleware``; ``actor.send()`` from here, done when every result is in (its Results
middleware, on the same Redis). The latency run serves a hub with ``DramatiqEngine``.
"""

from __future__ import annotations

import sys
from typing import Any

from . import harness

#: The scenario's scales (``benchmarks.harness.ENGINE_SCALES``).
SCALES = harness.ENGINE_SCALES


class Dramatiq:
    """Dramatiq: ``dramatiq benchmarks.dramatiq_app`` (one process, two threads), the
    ``StatusMiddleware`` on its broker; ``actor.send()`` from here, results from its
    Results middleware (on the same Redis)."""

    name = "dramatiq"

    def __init__(self, s: harness.EngineStack) -> None:
        from . import dramatiq_app

        self.s, self.app = s, dramatiq_app
        self.senders = {
            hooks: dramatiq_app.make_broker(s.engine_url, s.hub_url if hooks else None)
            for hooks in (False, True)
        }

    def worker(self, hooks: bool, stamps: bool = False) -> Any:
        env = self.s.worker_env(
            hooks, stamps, **{self.app.BROKER_ENV: self.s.engine_url, "dramatiq_worker_timeout": "100"}
        )
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "benchmarks.dramatiq_app",
            "--processes=1",
            "--threads=2",
        ]
        proc = self.s.procs.spawn(f"dramatiq-{'with' if hooks else 'without'}", command, self.s.cpu, env)
        self.s.wait_log(proc, "is ready for action", "the dramatiq worker")
        return proc

    def run(self, hooks: bool, tasks: int, timeout: float) -> None:
        """Send ``tasks`` no-op messages and wait until every result is in."""
        broker = self.senders[hooks]
        actor, backend = broker.get_actor("bench.noop"), broker.get_results_backend()
        messages = [actor.send() for _ in range(tasks)]
        for message in messages:
            message.get_result(backend=backend, block=True, timeout=int(timeout * 1000))

    def send_one(self) -> str:
        return str(self.senders[True].get_actor("bench.noop").send().message_id)

    def serve_command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.dramatiq_tasks",
            "serve",
            self.name,
            str(port),
            self.s.hub_url,
            self.s.engine_url,
        ]

    def server_env(self) -> dict[str, str]:
        return {}

    def stamps(self, ids: list[str], timeout: float) -> dict[str, int]:
        return harness.stored_stamps(self.s, ids, timeout)

    def close(self) -> None:
        for broker in self.senders.values():
            broker.close()


def serve(engine: str, port: int, hub_url: str, engine_url: str) -> None:
    import uvicorn

    from sse_tasks import TaskHub

    if engine == "dramatiq":
        from sse_tasks.dramatiq import DramatiqEngine

        from .dramatiq_app import make_broker

        executor: Any = DramatiqEngine(make_broker(engine_url))
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    hub = TaskHub(hub_url, executor=executor, max_streams=100_000)
    uvicorn.run(hub.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        engine, port, hub_url, engine_url = args[1:5]
        serve(engine, int(port), hub_url, engine_url)
        return 0
    return harness.engine_main(
        args, {"dramatiq": Dramatiq}, "python -m benchmarks.engines dramatiq", __doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
