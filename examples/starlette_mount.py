"""A plain Starlette app with the hub mounted under ``/api`` and its own 202 endpoint.

Run:  uvicorn examples.starlette_mount:app
Then: curl -X POST localhost:8000/api/imports   and follow the ``events`` link.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from sse_tasks import TaskContext, TaskHub

hub = TaskHub()


@hub.task(name="import_rows", timeout=600)
def import_rows(ctx: TaskContext, rows: int = 20) -> dict[str, int]:
    """A plain ``def``: runs in a worker thread; progress() works from there."""
    for i in range(rows):
        time.sleep(0.05)  # the blocking work
        ctx.progress((i + 1) / rows, f"row {i + 1} of {rows}")
    return {"imported": rows}


async def start_import(request: Request) -> JSONResponse:
    task = await hub.submit(import_rows, rows=int(request.query_params.get("rows", "20")))
    root = request.scope.get("root_path", "")
    body = task.to_dict(f"{root}/api")
    return JSONResponse(body, status_code=202, headers={"Location": body["links"]["self"]})


app = Starlette(
    routes=[Route("/api/imports", start_import, methods=["POST"]), Mount("/api", app=hub.app)],
    lifespan=hub.lifespan,
)
