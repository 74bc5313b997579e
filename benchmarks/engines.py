"""The task engines with and without the sse_tasks hook, in one scenario
(``benchmarks.harness``: tasks per second with ÷ without the hook for no-op and 1 ms
tasks, and the delay from the engine's own success to 100 followers' streams).

    python -m benchmarks.engines [--quick|--smoke] [--engines arq,taskiq,…] …   # in one run
    python -m benchmarks.engines ENGINE [--quick|--smoke] …                     # one engine

Each engine is a small adapter (its worker, how to send and wait, its hub) in its own
module. Celery's scenario is ``python -m benchmarks.celery_tasks``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from . import harness

#: Engine name -> ``module:class`` of its adapter in the scenario.
ENGINES = {
    "arq": "benchmarks.arq_bench:Arq",
    "dramatiq": "benchmarks.dramatiq_tasks:Dramatiq",
    "huey": "benchmarks.huey_tasks:HueyEngine",
    "rq": "benchmarks.rq_tasks:RQEngine",
    "taskiq": "benchmarks.taskiq_bench:Taskiq",
}


def maker(name: str) -> Callable[[harness.EngineStack], Any]:
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def installed() -> list[str]:
    import importlib.util

    return [name for name in ENGINES if importlib.util.find_spec(name) is not None]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ENGINES:
        names, args = [args[0]], args[1:]
        prog = f"python -m benchmarks.engines {names[0]}"
    else:
        names, prog = installed(), "python -m benchmarks.engines"
    return harness.engine_main(args, {n: maker(n) for n in names}, prog, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
