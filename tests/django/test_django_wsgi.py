"""examples/django_project over WSGI with Celery: Django's own WSGI server
(``manage.py runserver``), a real Celery worker (``celery -A mysite worker``) and a real
hub beside them (uvicorn) on the suite's Redis.

The view sends the work with ``.delay()`` and answers with the task's id and a token
minted in plain sync code (``TaskTokens(secret).issue``); following the hub's
``/tasks/<id>/events?token=…`` reaches ``task.succeeded``, and the Report the task
stored through the ORM is in the database.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _django_support import EXAMPLE, Process, UserFactory, answers, example_env, session_cookie
from _support import LiveServer, free_port, redis_db

pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[test]')")
pytest.importorskip("redis", reason="the redis client is not installed (pip install -e '.[test]')")

HUB_DB, CELERY_DB = 12, 13  # databases of the suite's redis-server that no other test uses
TIMEOUT = 30.0
QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO")


@pytest.fixture
def redis_dbs(redis_url: str) -> Iterator[tuple[str, str]]:
    """The hub's and Celery's Redis databases, flushed before and after."""
    import redis

    urls = (redis_db(redis_url, HUB_DB), redis_db(redis_url, CELERY_DB))
    clients = [redis.Redis.from_url(url) for url in urls]
    for client in clients:
        client.flushdb()
    yield urls
    for client in clients:
        client.flushdb()
        client.close()


def test_a_wsgi_view_hands_the_page_a_token(
    django_db: Path,
    make_user: UserFactory,
    redis_dbs: tuple[str, str],
    live_server: Callable[..., LiveServer],
    processes: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.conf import settings

    hub_redis, celery_redis = redis_dbs
    env = example_env(
        django_db,
        SSE_TASKS_BROKER=hub_redis,
        CELERY_BROKER_URL=celery_redis,
        SSE_TASKS_TOKEN_SECRET=settings.SSE_TASKS_TOKEN_SECRET,  # the example's, as this process has it
    )
    worker = processes(
        "celery",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "mysite",
            "worker",
            "--pool=threads",
            "--concurrency=2",
            *QUIET,
        ],
        env,
        EXAMPLE,
    )

    # The hub beside Django: mysite/hub.py's (`sse-tasks serve --app mysite.hub:hub`), here
    # on a uvicorn of this process.
    for name in ("SSE_TASKS_BROKER", "CELERY_BROKER_URL"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")  # configured already: kept
    from mysite.hub import hub
    from reports.models import Report

    server = live_server(hub)

    port = free_port()
    django = processes(
        "runserver",
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        {**env, "SSE_TASKS_URL": server.url},
        EXAMPLE,
    )
    site = f"http://127.0.0.1:{port}"
    django.wait_for(lambda: answers(site))
    worker.wait_for(lambda: " ready." in worker.text())

    with httpx.Client(base_url=site, cookies=session_cookie(make_user()), timeout=TIMEOUT) as client:
        page = client.get("/")
        assert page.status_code == 200 and f"{server.url}/sse-tasks.js" in page.text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf is not None
        started = client.post("/start/", data={"rows": "3", "csrfmiddlewaretoken": csrf[1]})
    assert started.status_code == 202, started.text
    answer: dict[str, Any] = started.json()
    task_id, token = answer["id"], answer["token"]
    assert answer["events"] == f"{server.url}/tasks/{task_id}/events?token={token}"

    assert httpx.get(f"{server.url}/tasks/{task_id}").status_code == 404  # no token, no task
    origin = "http://127.0.0.1:8000"  # the example's page, followed across origins
    module = httpx.get(f"{server.url}/sse-tasks.js", headers={"origin": origin})
    assert module.headers.get("access-control-allow-origin") == origin
    refused = httpx.post(f"{server.url}/tasks", json={"name": "build_report"}, params={"token": token})
    assert refused.status_code == 403  # only the views start tasks
    states = []
    with httpx.stream("GET", answer["events"], timeout=TIMEOUT) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line[6:]))
    final = states[-1]
    assert final["state"] == "succeeded", (final, worker.text()[-2000:])
    assert final["result"]["rows"] == 3
    assert final["message"] == "row 3 of 3"  # progress through our context, on the worker
    report = Report.objects.get(task_id=task_id)
    assert (report.pk, report.rows) == (final["result"]["report"], 3)
