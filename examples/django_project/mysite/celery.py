"""The Celery app of the WSGI set-up (``celery -A mysite worker``).

``SSE_TASKS_BROKER`` is the hub's Redis (default ``redis://127.0.0.1:6379/0``);
``CELERY_BROKER_URL`` Celery's (default: the same Redis, the next database).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()

from celery import Celery  # noqa: E402
from reports import work  # noqa: E402

import sse_tasks.celery  # noqa: E402

HUB_REDIS = os.environ.get("SSE_TASKS_BROKER") or "redis://127.0.0.1:6379/0"


def _next_database(url: str) -> str:
    base = url.partition("?")[0]
    root, _, db = base.rpartition("/")
    return f"{root}/{int(db or 0) + 1}"


app = Celery("mysite", broker=os.environ.get("CELERY_BROKER_URL") or _next_database(HUB_REDIS))
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
sse_tasks.celery.connect(app, HUB_REDIS)

# The same function as on the in-process hub; Celery's Django fixup closes its connections.
build_report = app.task(name="build_report")(work.build_report)
