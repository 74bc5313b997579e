"""The task engines with and without the sse_tasks hook: ``python -m benchmarks.engines ENGINE
[--quick|--smoke] …``. Each engine's scenario is its own module (``--help`` after the
engine's name lists its options): tasks per second with ÷ without the hook, no-op and
1 ms tasks, and the delay from the engine's own "succeeded" to 100 followers' streams.
Celery's is ``python -m benchmarks.celery_tasks``.
"""

from __future__ import annotations

import importlib
import sys

#: Engine name -> the module of its scenario (a ``main(argv) -> int``).
ENGINES = {
    "arq": "benchmarks.arq_bench",
    "dramatiq": "benchmarks.dramatiq_tasks",
    "huey": "benchmarks.huey_tasks",
    "rq": "benchmarks.rq_tasks",
    "taskiq": "benchmarks.taskiq_bench",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ENGINES:
        print(
            f"usage: python -m benchmarks.engines {{{','.join(ENGINES)}}} [--quick|--smoke] …",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(ENGINES[args[0]])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
