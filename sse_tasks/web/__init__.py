"""The web layer: the hub's HTTP API and SSE streams over a :class:`TaskBackend`.

``backend`` (the protocol of what the web layer may ask the runner), ``settings``
(frozen, validated once), ``service`` (composes the rest for one hub), ``endpoints``
(one named function per route and method, given a ``Web`` context), ``routes`` (the
route table), ``operations`` (what each route reads and answers), ``app`` (the hub's
own app, with its fast path for streams), ``streams`` (from the event log to SSE bytes:
resume, resync, coalescing), ``sse`` (the response and stream monitor: asyncio only,
its deliberate deviations in its docstring), ``server_exit`` (when the server running
the hub begins to exit), ``auth`` (the hook, tokens), ``cors``, ``limits``, ``openapi``
(the document, generated from the routes) and ``metrics``.
"""

from .backend import TaskBackend

__all__ = ["TaskBackend"]
