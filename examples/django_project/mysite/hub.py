"""The hub beside a WSGI Django (``sse-tasks serve --app mysite.hub:hub``).

Its tasks are the Celery app's; the views send them with ``.delay()`` and hand the page
a per-task token, so this hub shows a task only to a request carrying its token, and
takes no submissions of its own.
"""

from collections.abc import Callable

from django.conf import settings

from mysite.celery import HUB_REDIS, app
from sse_tasks import Access, Task, TaskHub, tokens_only
from sse_tasks.celery import CeleryExecutor


def views_submit(access: Access) -> bool | Callable[[Task], bool]:
    """Only the Django views start tasks; a token shows its task."""
    return False if access.action == "submit" else tokens_only(access)


hub = TaskHub(
    HUB_REDIS,
    executor=CeleryExecutor(app),
    tokens=settings.SSE_TASKS_TOKEN_SECRET,
    authorize=views_submit,
    cors_origins=settings.SSE_TASKS_CORS_ORIGINS,
)
