"""The hub inside Django (ASGI, ``mysite/asgi.py`` serves it under /jobs).

The logged-in user owns the tasks it starts and sees only those (staff: all of them with
``SSE_TASKS_STAFF_SEES_ALL=1``).
"""

from django.conf import settings

import sse_tasks.django
from sse_tasks import TaskHub

from . import work

owner = sse_tasks.django.session_owner(staff_sees_all=settings.SSE_TASKS_STAFF_SEES_ALL)
hub = TaskHub(identify=owner.identify, authorize=owner.authorize)

build_report = sse_tasks.django.task(hub)(work.build_report)
quick_report = sse_tasks.django.task(hub)(work.quick_report)
