"""A FastAPI app: your own endpoint validates and returns 202; the hub streams progress.

Run:  uvicorn examples.fastapi_app:app
Then: curl -X POST 'localhost:8000/reports?rows=50'
      curl -N localhost:8000/tasks/<id>/events

``rows`` is bounded (``Query(ge=1, le=MAX_ROWS)``) and a bad value gets the hub's error
shape, ``422 {"error": {"code": "invalid_request", "message": …}}``, like every other
route of this API; the hub's own refusals (a full queue, a shutdown: 503 with
``Retry-After``) reach the client in that shape too, never as a 500.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sse_tasks import InvalidRequest, SSETasksError, TaskContext, TaskHub

MAX_ROWS = 10_000

hub = TaskHub()


@hub.task
async def report(ctx: TaskContext, rows: int = 100) -> dict[str, int]:
    # POST /tasks reaches this function without passing start_report: the hub checks
    # the type of ``rows``, the function checks its range.
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be from 1 to {MAX_ROWS}")
    for i in range(rows):
        await anyio.sleep(0.02)
        ctx.progress((i + 1) / rows, f"row {i + 1} of {rows}")
    return {"rows": rows}


app = FastAPI(lifespan=hub.lifespan)
app.router.routes.extend(hub.routes)  # /tasks, /tasks/{id}, /tasks/{id}/events, /events at the root


@app.exception_handler(SSETasksError)
async def sse_tasks_error(request: Request, exc: SSETasksError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (``{"detail": […]}``) in the hub's error shape."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return await sse_tasks_error(request, InvalidRequest(problems))


@app.post("/reports", status_code=202)
async def start_report(
    response: Response, rows: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 100
) -> dict[str, Any]:
    task = await hub.submit(report, rows=rows)
    response.headers["Location"] = f"/tasks/{task.id}"
    return task.to_dict()
