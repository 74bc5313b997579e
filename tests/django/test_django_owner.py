"""``sse_tasks.django.session_owner``: the Django user logged in by session owns its tasks.

Real users in the migrated database, real sessions (Django's login), a real uvicorn
serving ``sse_tasks.django.asgi``; user A's task is invisible to user B, exactly like
an id that never existed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _django_support import UserFactory, session_cookie
from _support import LiveServer

from sse_tasks import TaskContext, TaskHub

TIMEOUT = 30.0


def _served(live_server: Callable[..., LiveServer], staff_sees_all: bool) -> tuple[str, threading.Event]:
    import sse_tasks.django

    owner = sse_tasks.django.session_owner(staff_sees_all=staff_sees_all)
    hub = TaskHub("memory://", identify=owner.identify, authorize=owner.authorize, shutdown_grace=1.0)
    release = threading.Event()

    @sse_tasks.django.task(hub)
    def wait(ctx: TaskContext) -> str:
        while not release.wait(0.02):
            ctx.check()
        return "done"

    server = live_server(hub, sse_tasks.django.asgi(hub, prefix="/jobs"))
    return f"{server.url}/jobs", release


def _same_as_unknown(response: httpx.Response, client: httpx.Client, hub: str, task_id: str) -> None:
    """404, with the body and headers an id that never existed gets (the id aside)."""
    method, path = response.request.method, response.request.url.path.replace(task_id, "never-existed")
    unknown = client.request(method, f"{hub.rsplit('/jobs', 1)[0]}{path}")
    assert response.status_code == unknown.status_code == 404, response.text
    assert response.text.replace(task_id, "never-existed") == unknown.text
    assert {k: v for k, v in response.headers.items() if k not in ("date", "content-length")} == {
        k: v for k, v in unknown.headers.items() if k not in ("date", "content-length")
    }


@pytest.mark.parametrize("staff_sees_all", [False, True])
def test_each_user_sees_only_its_own_tasks(
    django_db: Path, make_user: UserFactory, live_server: Callable[..., LiveServer], staff_sees_all: bool
) -> None:
    hub, release = _served(live_server, staff_sees_all)
    alice, bob, staff = make_user(), make_user(), make_user(staff=True)
    a = httpx.Client(cookies=session_cookie(alice), timeout=TIMEOUT)
    b = httpx.Client(cookies=session_cookie(bob), timeout=TIMEOUT)
    s = httpx.Client(cookies=session_cookie(staff), timeout=TIMEOUT)
    anonymous = httpx.Client(timeout=TIMEOUT)
    try:
        assert anonymous.post(f"{hub}/tasks", json={"name": "wait"}).status_code == 401
        created = a.post(f"{hub}/tasks", json={"name": "wait"})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]

        assert a.get(f"{hub}/tasks/{task_id}").json()["state"] in ("queued", "running")
        assert [t["id"] for t in a.get(f"{hub}/tasks").json()["tasks"]] == [task_id]
        for other in (b, anonymous):
            _same_as_unknown(other.get(f"{hub}/tasks/{task_id}"), other, hub, task_id)
            _same_as_unknown(other.get(f"{hub}/tasks/{task_id}/events"), other, hub, task_id)
            _same_as_unknown(other.delete(f"{hub}/tasks/{task_id}"), other, hub, task_id)
            assert other.get(f"{hub}/tasks").json()["tasks"] == []
        if staff_sees_all:
            assert s.get(f"{hub}/tasks/{task_id}").status_code == 200
            assert [t["id"] for t in s.get(f"{hub}/tasks").json()["tasks"]] == [task_id]
        else:
            _same_as_unknown(s.get(f"{hub}/tasks/{task_id}"), s, hub, task_id)
            assert s.get(f"{hub}/tasks").json()["tasks"] == []

        # Alice follows her task to its end; Bob's own task is his alone.
        with a.stream("GET", f"{hub}/tasks/{task_id}/events") as stream:
            assert stream.status_code == 200
            release.set()
            body = "".join(stream.iter_text())
        assert "event: task.succeeded" in body and '"result":"done"' in body
        second = b.post(f"{hub}/tasks", json={"name": "wait"}).json()["id"]
        assert [t["id"] for t in b.get(f"{hub}/tasks").json()["tasks"]] == [second]
        _same_as_unknown(a.delete(f"{hub}/tasks/{second}"), a, hub, second)
        assert b.get(f"{hub}/tasks/{second}").json()["state"] == "succeeded"  # released already
    finally:
        release.set()
        for client in (a, b, s, anonymous):
            client.close()


def test_the_owner_cancels_its_task(
    django_db: Path, make_user: UserFactory, live_server: Callable[..., LiveServer]
) -> None:
    hub, release = _served(live_server, False)
    with httpx.Client(cookies=session_cookie(make_user()), timeout=TIMEOUT) as a:
        task_id = a.post(f"{hub}/tasks", json={"name": "wait"}).json()["id"]
        cancelled = a.delete(f"{hub}/tasks/{task_id}")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
    release.set()


def test_a_forged_or_stale_session_is_anonymous(
    django_db: Path, make_user: UserFactory, live_server: Callable[..., LiveServer]
) -> None:
    from django.conf import settings

    hub, release = _served(live_server, False)
    user = make_user()
    cookies = session_cookie(user)
    with httpx.Client(cookies=cookies, timeout=TIMEOUT) as client:
        assert client.post(f"{hub}/tasks", json={"name": "wait"}).status_code == 202
    user.set_password("a new password")  # Django ends the sessions of a changed password
    user.save()
    for jar in (cookies, {settings.SESSION_COOKIE_NAME: "forged"}):
        with httpx.Client(cookies=jar, timeout=TIMEOUT) as client:
            assert client.post(f"{hub}/tasks", json={"name": "wait"}).status_code == 401
    release.set()
