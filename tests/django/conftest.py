"""Django for the tests of ``sse_tasks.django``: the example project's settings, once per process.

Django's settings are process-wide and cannot be undone, so they are configured here,
in a session fixture of this package only: the example project's ``mysite.settings``
on a SQLite file of this process, migrated for real. Other packages' tests running in
the same process never touch Django. Tests that need the project as its README runs it
(``manage.py``, ``uvicorn``, a WSGI server, a Celery worker) start it as a subprocess.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# minversion: without Django, this very directory would import as a namespace package "django".
pytest.importorskip("django", minversion="4.2", reason="django is not installed (pip install -e '.[test]')")

from _django_support import EXAMPLE, Process, UserFactory, spawn
from _support import ROOT


@pytest.fixture(scope="session")
def django_db() -> Path:
    """Django set up with the example's settings on a migrated SQLite file; its path."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    if settings.configured:
        return Path(settings.DATABASES["default"]["NAME"])
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import mysite.settings as example

    values = {name: getattr(example, name) for name in dir(example) if name.isupper()}
    path = Path(tempfile.mkdtemp(prefix="sse-tasks-django-")) / "db.sqlite3"
    values["DATABASES"] = {"default": {**values["DATABASES"]["default"], "NAME": str(path)}}
    # Tests make many users: a fast hash (the subprocesses keep the project's own hashers,
    # and the users made here log in there by session, not by password).
    values["PASSWORD_HASHERS"] = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.configure(**values)
    django.setup()
    call_command("migrate", verbosity=0)
    return path


@pytest.fixture
def make_user(django_db: Path) -> UserFactory:
    """``make_user(staff=False)``: a new user with a unique name (password ``pw-<name>``, in
    this process)."""
    from django.contrib.auth import get_user_model

    def make(staff: bool = False) -> Any:
        name = f"user-{uuid.uuid4().hex[:12]}"
        return get_user_model().objects.create_user(name, password=f"pw-{name}", is_staff=staff)

    return make


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    """``processes(what, command, env, cwd=ROOT)``: started now, stopped after the test."""
    started: list[Process] = []

    def start(what: str, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> Process:
        process = spawn(what, command, env, cwd)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()
