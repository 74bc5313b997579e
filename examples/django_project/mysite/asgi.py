"""ASGI: Django and the hub in one application (``uvicorn mysite.asgi:application``).

The hub answers under /jobs (``/jobs/tasks``, ``/jobs/tasks/<id>/events``,
``/jobs/sse-tasks.js``); everything else is Django. The hub starts with the server's
lifespan (or on the first request under ``--lifespan off``).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_application = get_asgi_application()  # sets Django up: models import after it

from reports.jobs import hub  # noqa: E402

import sse_tasks.django  # noqa: E402

application = sse_tasks.django.asgi(hub, prefix="/jobs", django=django_application)
