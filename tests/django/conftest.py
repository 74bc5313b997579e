"""Django for the tests of ``sse_tasks.django``: the example project's settings, once per process.

Django's settings are process-wide and cannot be undone, so they are configured here,
in a session fixture of this package only: the example project's ``mysite.settings``
on a SQLite file of this process, migrated for real. Other packages' tests running in
the same process never touch Django. Tests that need the project as its README runs it
(``manage.py``, ``uvicorn``, a WSGI server, a Celery worker) start it as a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ROOT

pytest.importorskip("django", reason="django is not installed (pip install -e '.[test]')")

EXAMPLE = ROOT / "examples" / "django_project"
BIN = Path(sys.executable).parent
READY_TIMEOUT = 45.0


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
    settings.configure(**values)
    django.setup()
    call_command("migrate", verbosity=0)
    return path


UserFactory = Callable[..., Any]


@pytest.fixture
def make_user(django_db: Path) -> UserFactory:
    """``make_user(staff=False)``: a new user with a unique name (password ``pw-<name>``)."""
    from django.contrib.auth import get_user_model

    def make(staff: bool = False) -> Any:
        name = f"user-{uuid.uuid4().hex[:12]}"
        return get_user_model().objects.create_user(name, password=f"pw-{name}", is_staff=staff)

    return make


def session_cookie(user: Any) -> dict[str, str]:
    """The cookies of a browser logged in as ``user`` (a real session, through Django's login)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


# -- the example project as subprocesses ------------------------------------------------------------


@dataclass
class Process:
    """A command in its own process group, its output in a log file."""

    what: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} not ready in {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


def example_env(db: Path, **extra: str) -> dict[str, str]:
    """The environment of the example's commands: no variables of the caller's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "CELERY_", "DJANGO_"))}
    return {**env, "DJANGO_DB": str(db), **extra}


def run_manage(env: dict[str, str], *args: str) -> None:
    """``python manage.py ARGS`` in the example's directory, as its README says."""
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, check=True, capture_output=True, timeout=60
    )


def spawn(what: str, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> Process:
    log = Path(tempfile.mkstemp(prefix=f"django-{what}-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(what, proc, log)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


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
