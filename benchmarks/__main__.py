"""sse_tasks against nchan, aiohttp-sse and sse-starlette: every scenario of the comparison."""

from .systems import comparison, main

raise SystemExit(main(comparison(), description=__doc__))
