"""examples/django_project over ASGI, run with the commands of its README: ``manage.py
migrate``, ``manage.py createsuperuser``, ``uvicorn --app-dir examples/django_project
mysite.asgi:application``; then Chromium logs in, clicks and sees the report through."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _django_support import BIN, Process, answers, example_env, run_manage, spawn
from _support import free_port

pytestmark = pytest.mark.xdist_group("django_example")  # one database and server for both

PASSWORD = "pw-alice-example"
TIMEOUT = 30.0


def _start(db: Path, *options: str) -> tuple[str, Process]:
    port = free_port()
    command = [str(BIN / "uvicorn"), "--app-dir", "examples/django_project", "mysite.asgi:application"]
    process = spawn("uvicorn", [*command, "--port", str(port), *options], example_env(db))
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for(lambda: answers(url))
    except BaseException:
        process.stop()
        raise
    return url, process


@pytest.fixture(scope="module")
def example_db() -> Path:
    """A database made by the README's commands, with the user ``alice``."""
    db = Path(tempfile.mkdtemp(prefix="sse-tasks-django-example-")) / "db.sqlite3"
    env = example_env(db, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    run_manage(env, "migrate")
    run_manage(env, "createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.com")
    return db


@pytest.fixture(scope="module")
def asgi_example(example_db: Path) -> Iterator[str]:
    url, process = _start(example_db)
    yield url
    process.stop()


def _login(client: httpx.Client) -> None:
    form = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text
    done = client.post(
        "/accounts/login/",
        data={"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token[1]},
    )
    assert done.status_code == 302, done.text


def test_the_page_builds_a_report(asgi_example: str, page: Any) -> None:
    from _browser import expect

    page.goto(asgi_example + "/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#user")).to_have_text("alice")
    page.fill("input[name=rows]", "5")
    page.click("text=Build a report")
    expect(page.locator("#state")).to_have_text("running", timeout=TIMEOUT * 1000)
    expect(page.locator("#state")).to_have_text("succeeded", timeout=TIMEOUT * 1000)
    expect(page.locator("#message")).to_have_text("row 5 of 5")
    assert page.locator("#bar").evaluate("bar => bar.value") == 1
    expect(page.locator("#result")).to_contain_text('"rows":5')


def test_without_lifespan_the_hub_starts_on_the_first_request(example_db: Path) -> None:
    url, process = _start(example_db, "--lifespan", "off")
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            _login(client)
            page = client.get("/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert token is not None
            started = client.post("/start/", data={"rows": "2", "csrfmiddlewaretoken": token[1]})
            assert started.status_code == 202, started.text
            with client.stream("GET", started.json()["events"]) as stream:
                assert stream.status_code == 200
                body = "".join(stream.iter_text())
        assert "event: task.succeeded" in body and '"rows":2' in body
        assert "Waiting for application startup" not in process.text()  # no lifespan indeed
    finally:
        process.stop()
