"""One server under test: ``python -m benchmarks.server APP PORT [--cpu N]``.

uvicorn with uvloop and httptools (``uvicorn[standard]``), no access log, pinned to
one CPU when ``--cpu`` is given.
"""

from __future__ import annotations

import argparse
import os
import resource

import uvicorn

from .apps import APPS, make_app


def raise_nofile() -> int:
    """Raise the open-files limit to its hard maximum (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=APPS)
    parser.add_argument("port", type=int)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    uvicorn.run(
        make_app(args.app),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
