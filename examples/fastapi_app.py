"""A FastAPI app: your own endpoint validates and returns 202; the hub streams progress.

Run:  uvicorn examples.fastapi_app:app
Then: curl -X POST 'localhost:8000/reports?rows=50'
      curl -N localhost:8000/tasks/<id>/events
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI, Response

from sse_tasks import TaskContext, TaskHub

hub = TaskHub()


@hub.task
async def report(ctx: TaskContext, rows: int = 100) -> dict[str, int]:
    for i in range(rows):
        await anyio.sleep(0.02)
        ctx.progress((i + 1) / rows, f"row {i + 1} of {rows}")
    return {"rows": rows}


app = FastAPI(lifespan=hub.lifespan)
app.router.routes.extend(hub.routes)  # /tasks, /tasks/{id}, /tasks/{id}/events, /events at the root


@app.post("/reports", status_code=202)
async def start_report(response: Response, rows: int = 100) -> dict[str, Any]:
    task = await hub.submit(report, rows=rows)
    response.headers["Location"] = f"/tasks/{task.id}"
    return task.to_dict()
