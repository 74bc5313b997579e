"""WSGI: Django alone; the hub runs beside it (``sse-tasks serve --app mysite.hub:hub``)
and the work on Celery (``celery -A mysite worker``). See README.md."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
