"""The task core: what a task is, independent of where it runs and how it is served.

``models`` (snapshots, states, events, SSE frames), ``errors`` (status and code of
every refusal), ``codec`` (strict JSON), ``text`` (untrusted text and digits),
``registry`` (task functions and the check of params), ``context`` (what a task
function is handed, over a sink), ``log`` (the ordered event ring streams read) and
``stats`` (counters). Nothing here imports Starlette routing, sse-starlette or uvicorn.
"""
