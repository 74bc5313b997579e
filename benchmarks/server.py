"""One Python server under test: ``python -m benchmarks.server APP PORT [--cpu N] [--broker URL]``.

uvicorn with uvloop and httptools (``uvicorn[standard]``), no access log; aiohttp-sse
under ``aiohttp.web`` on uvloop. Pinned to one CPU when ``--cpu`` is given.
"""

from __future__ import annotations

import argparse
import os

from .apps import APPS
from .systems import raise_nofile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=APPS)
    parser.add_argument("port", type=int)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--broker", default="memory://", help="sse_tasks only")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    if args.app == "aiohttp-sse":
        from .aiohttp_app import serve

        serve(args.port)
        return

    import uvicorn

    from .apps import make_app

    uvicorn.run(
        make_app(args.app, args.broker),
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
