"""Benchmarks: sse_tasks against a plain Starlette + sse-starlette broadcast app.

Run ``python -m benchmarks`` (``--quick`` for a short run); see ``benchmarks/README.md``.
"""
