"""Benchmarks: sse_tasks (memory:// and redis://) against nchan, aiohttp-sse and a plain
Starlette + sse-starlette broadcast app, in the same run, and on its own (selective
streams, task output, Celery).

``python -m benchmarks`` runs every scenario of the comparison (``--quick``: smaller,
``--smoke``: the smallest); ``python -m benchmarks.<scenario>`` one of them. The
module map and how to read the results: ``benchmarks/README.md``.
"""
