"""A plain Starlette app with the hub mounted under ``/api`` and its own 202 endpoint.

Run:  uvicorn examples.starlette_mount:app
Then: curl -X POST 'localhost:8000/api/imports?rows=20'   and follow the ``events`` link.

The endpoint checks its input the way the hub checks its own: a bad ``rows`` gets
``422 {"error": {"code": "invalid_request", "message": …}}``, never a 500, and the
hub's own refusals (a full queue, a shutdown: 503 with ``Retry-After``) reach the
client in the same shape.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from sse_tasks import InvalidRequest, SSETasksError, TaskContext, TaskHub

MAX_ROWS = 10_000

hub = TaskHub()


@hub.task(name="import_rows", timeout=600)
def import_rows(ctx: TaskContext, rows: int = 20) -> dict[str, int]:
    """A plain ``def``: runs in a worker thread; progress() works from there."""
    # POST /api/tasks reaches this function without passing start_import: the hub checks
    # the type of ``rows``, the function checks its range.
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be from 1 to {MAX_ROWS}")
    for i in range(rows):
        time.sleep(0.05)  # the blocking work
        ctx.progress((i + 1) / rows, f"row {i + 1} of {rows}")
    return {"imported": rows}


def query_rows(request: Request, default: int) -> int:
    """``?rows=``: ASCII digits only, 1 to MAX_ROWS; else :class:`InvalidRequest` (422).

    ``int()`` alone is not enough: it raises on "abc", "1e400", "²" or 5,000 digits
    (a 500 unless caught) and takes "+5", " 5", "1_0" and "٣".
    """
    raw = request.query_params.get("rows")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_ROWS:
        raise InvalidRequest(f"'rows' must be an integer from 1 to {MAX_ROWS}")
    return int(raw)


async def start_import(request: Request) -> JSONResponse:
    task = await hub.submit(import_rows, rows=query_rows(request, 20))
    root = request.scope.get("root_path", "")
    body = task.to_dict(f"{root}/api")
    return JSONResponse(body, status_code=202, headers={"Location": body["links"]["self"]})


async def sse_tasks_error(request: Request, exc: Exception) -> Response:
    """Errors the hub raises (and ``InvalidRequest`` above) in the hub's own JSON shape."""
    assert isinstance(exc, SSETasksError)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


app = Starlette(
    routes=[Route("/api/imports", start_import, methods=["POST"]), Mount("/api", app=hub.app)],
    exception_handlers={SSETasksError: sse_tasks_error},
    lifespan=hub.lifespan,
)
