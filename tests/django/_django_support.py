"""Helpers of the Django tests: sessions, and the example project's commands as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _support import ROOT

EXAMPLE = ROOT / "examples" / "django_project"
BIN = Path(sys.executable).parent
READY_TIMEOUT = 45.0

UserFactory = Callable[..., Any]


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
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
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
