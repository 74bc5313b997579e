"""Benchmarks: sse_tasks (memory:// and redis://) against nchan, aiohttp-sse and a plain
Starlette + sse-starlette broadcast app, in the same run.

Run ``python -m benchmarks`` (``--quick`` for a short run); see ``benchmarks/README.md``.
"""
