"""The classic FastAPI ``BackgroundTasks`` example, made observable.

Before::

    @app.get("/")
    async def hello(background_tasks: BackgroundTasks):
        print("Hi")
        background_tasks.add_task(print_msg, "Ithome")
        return {"msg": "Hello World"}

``print_msg`` itself is unchanged. The response still arrives at once and the greeting
still prints 5 s later, but now the response carries the task, and
``curl -N localhost:8000/jobs/tasks/<id>/events`` (or a browser ``EventSource``) is
told when it starts and when it is done. ``GET /progress`` runs the richer version,
which also tells how far along it is.

If the hub cannot take the task (its queue is full, the server is shutting down), the
endpoint answers the hub's ``503 {"error": {"code": …, "message": …}}`` with
``Retry-After``, not a 500.

Run:  uvicorn examples.background_tasks:app
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse

from sse_tasks import SSETasksError, TaskContext, TaskHub

hub = TaskHub()
app = FastAPI(lifespan=hub.lifespan)
app.mount("/jobs", hub.app)

GREETING_SECONDS = 5.0


@app.exception_handler(SSETasksError)
async def sse_tasks_error(request: Request, exc: SSETasksError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


def print_msg(name: str) -> None:
    """The starting example's own function, unchanged: tracked queued → running → succeeded."""
    time.sleep(GREETING_SECONDS)
    print(f"Hello {name}~")


async def print_msg_with_progress(ctx: TaskContext, name: str) -> str:
    """The same, telling how far along it is: it asks for a context by annotating one."""
    steps = 10
    for i in range(steps):
        await anyio.sleep(GREETING_SECONDS / steps)
        ctx.progress((i + 1) / steps, f"greeting in {GREETING_SECONDS * (steps - i - 1) / steps:.1f} s")
    print(f"Hello {name}~")
    return f"Hello {name}~"


@app.get("/")
async def hello(background_tasks: BackgroundTasks) -> dict[str, Any]:
    print("Hi")
    tracked = await hub.background(print_msg, "Ithome")  # was: add_task(print_msg, "Ithome")
    background_tasks.add_task(tracked)  # runs after the response is sent, like add_task
    return {"msg": "Hello World", "task": tracked.task.to_dict("/jobs")}


@app.get("/progress")
async def hello_with_progress(background_tasks: BackgroundTasks) -> dict[str, Any]:
    tracked = await hub.background(print_msg_with_progress, "Ithome")
    background_tasks.add_task(tracked)
    return {"msg": "Hello World", "task": tracked.task.to_dict("/jobs")}
