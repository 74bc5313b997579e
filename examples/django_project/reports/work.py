"""The slow work: plain functions on the ORM, run by the in-process hub (ASGI) or Celery (WSGI)."""

import time

from sse_tasks import current_task

from .models import Report


def build_report(rows: int = 5, delay: float = 0.2) -> dict[str, int]:
    """Goes through ``rows`` rows (a progress step each), then stores a ``Report``."""
    task = current_task()
    for row in range(1, rows + 1):
        time.sleep(delay)
        task.progress(row / rows, f"row {row} of {rows}")
    report = Report.objects.create(task_id=task.task_id, rows=rows)
    return {"report": report.pk, "rows": rows, "reports": Report.objects.count()}


async def quick_report(rows: int = 1) -> dict[str, int]:
    """The async flavour: Django's async ORM, on the hub's event loop."""
    report = await Report.objects.acreate(task_id=current_task().task_id, rows=rows)
    return {"report": report.pk, "rows": rows, "reports": await Report.objects.acount()}
