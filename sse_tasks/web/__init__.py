"""The web layer: the hub's HTTP API and SSE streams over the runner.

``settings`` (frozen, validated once), ``service`` (composes the rest for one hub),
``routes`` (endpoints, JSON errors), ``streams`` (from the event log to SSE bytes:
resume, resync, coalescing), ``sse`` (the response and stream monitor: the only
sse-starlette adapter), ``auth`` (the hook, tokens), ``cors``, ``limits``,
``openapi`` and ``metrics``.
"""
