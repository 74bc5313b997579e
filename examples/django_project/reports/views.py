"""The page with the button, and the view its button posts to."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

import sse_tasks.django
from sse_tasks import TaskTokens


@login_required
def page(request: HttpRequest) -> HttpResponse:
    return render(request, "reports/page.html", {"hub_url": settings.SSE_TASKS_URL or "/jobs"})


@login_required
@require_POST
def start(request: HttpRequest) -> JsonResponse:
    """Start a report; answer with the task's id and the URL of its event stream."""
    try:
        rows = min(max(int(request.POST.get("rows", "5")), 1), 100)
    except ValueError:
        return JsonResponse({"error": "rows must be a number"}, status=400)
    if settings.SSE_TASKS_URL:
        # WSGI: Celery runs the work; the hub beside Django shows it to the token's holder.
        from mysite.celery import build_report

        task_id = build_report.delay(rows=rows).id
        token = TaskTokens(settings.SSE_TASKS_TOKEN_SECRET).issue(task_id)
        events = f"{settings.SSE_TASKS_URL}/tasks/{task_id}/events?token={token}"
        return JsonResponse({"id": task_id, "token": token, "events": events}, status=202)
    # ASGI: the hub runs in this process; this sync view hands it the task, owned by the user.
    from reports.jobs import hub

    task = sse_tasks.django.submit(hub, "build_report", {"rows": rows}, user=request.user)
    return JsonResponse({"id": task.id, "events": f"/jobs/tasks/{task.id}/events"}, status=202)
