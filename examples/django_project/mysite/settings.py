"""Settings of the example project; the environment variables below change them."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "reports",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
WSGI_APPLICATION = "mysite.wsgi.application"
ASGI_APPLICATION = "mysite.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB") or BASE_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# -- sse_tasks ----------------------------------------------------------------------------
# Empty: ASGI, the hub runs inside Django under /jobs (mysite/asgi.py). Set: WSGI, the hub
# runs beside Django (`sse-tasks serve --app mysite.hub:hub`) at this URL, the work on Celery.
SSE_TASKS_URL = os.environ.get("SSE_TASKS_URL", "").rstrip("/")
# Signs the per-task tokens the views hand the page (the hub beside Django verifies them).
SSE_TASKS_TOKEN_SECRET = os.environ.get("SSE_TASKS_TOKEN_SECRET", "example-only-token-secret-change-me")
# Staff users see every user's tasks on the hub under /jobs.
SSE_TASKS_STAFF_SEES_ALL = os.environ.get("SSE_TASKS_STAFF_SEES_ALL", "") == "1"
# The pages' origins, allowed to follow the hub beside Django (another origin).
SSE_TASKS_CORS_ORIGINS = os.environ.get(
    "SSE_TASKS_CORS_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000"
).split(",")
