"""``sse-tasks serve``'s security and limit options reach the hub it serves."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from _support import free_port, serve_in_thread, wait_until
from click.testing import CliRunner

from sse_tasks.cli import ServeConfig, main, served_app

pytestmark = pytest.mark.anyio

SECRET = "serve-secret-of-enough-length"


def test_the_configuration_reaches_the_served_hub() -> None:
    """Tokens, CORS, metrics and a stream limit from one ServeConfig, over real HTTP."""
    config = ServeConfig(
        token_secret=SECRET,
        cors_origins=("https://a.example", "https://b.example"),
        cors_credentials=True,
        metrics=True,
        max_streams_per_client=1,
        max_stream_lifetime=600,
    )
    with serve_in_thread(served_app(config)) as server, httpx.Client(base_url=server.url) as client:
        created = client.post("/tasks", json={"name": "fail"}, timeout=10)
        assert created.status_code == 202 and created.json()["token"]
        assert client.get(f"/tasks/{created.json()['id']}", timeout=10).status_code == 404
        assert client.get("/metrics", timeout=10).status_code == 200
        cors = client.get("/tasks", headers={"origin": "https://b.example"}, timeout=10)
        assert cors.headers["access-control-allow-credentials"] == "true"
        with client.stream("GET", "/events", timeout=10) as first:
            assert first.status_code == 200
            second = client.get("/events", timeout=10)
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "too_many_streams_per_client"


@pytest.mark.parametrize(
    "args",
    [
        ["--cors-origin", "*", "--cors-credentials"],
        ["--cors-origin", "a.example"],
        ["--token-secret", "short"],
    ],
)
def test_unsafe_options_are_refused_before_serving(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2
    assert "Error" in result.output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_HEADER_SIZE", "10"),
        ("HEADER_TIMEOUT", "0"),
        ("PORT", "http"),
        ("WORKERS", "0"),
        ("ROOT_PATH", "jobs"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.0/33"),
    ],
)
def test_options_are_read_from_the_environment_and_checked(name: str, value: str) -> None:
    """SSE_TASKS_<OPTION>, not click's default SSE_TASKS_SERVE_<OPTION>."""
    # Were the variable not read, the bogus broker would stop serve before it listens.
    env = {f"SSE_TASKS_{name}": value}
    result = CliRunner().invoke(main, ["serve", "--broker", "bogus://x"], env=env)
    assert result.exit_code == 2
    assert f"'--{name.lower().replace('_', '-')}'" in result.output


def _module_with_hub(tmp_path: object, monkeypatch: pytest.MonkeyPatch, names: list[str], module: str) -> str:
    """A module in ``tmp_path`` whose hub has tasks of ``names``."""
    from pathlib import Path

    lines = ["from sse_tasks import TaskHub", "hub = TaskHub()"]
    for name in names:
        lines += [f"@hub.task(name={name!r})", f"def task_{name}() -> str:", f"    return {name!r}"]
    Path(str(tmp_path), f"{module}.py").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{module}:hub"


async def test_an_app_with_every_demo_task_gets_the_demo_page_and_keeps_its_tasks(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_tasks.cli.app import create_server_app

    app = create_server_app(
        app=_module_with_hub(tmp_path, monkeypatch, ["sleep", "count", "fail", "generate"], "servedhub_demo")
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            page = await client.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            created = await client.post("/tasks", json={"name": "count"})
            assert created.status_code == 202
            # The app's own `count` (no params), not the demo's: n=3 does not fit it.
            refused = await client.post("/tasks", json={"name": "count", "params": {"n": 3}})
            assert refused.status_code == 422


async def test_an_app_without_the_demo_tasks_gets_no_page_unless_asked(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_tasks.cli.app import create_server_app

    app = create_server_app(app=_module_with_hub(tmp_path, monkeypatch, ["sleep"], "servedhub_plain"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            assert (await client.get("/")).status_code == 404
    spec = _module_with_hub(tmp_path, monkeypatch, ["sleep"], "servedhub_asked")
    asked = create_server_app(app=spec, demo=True)  # the demo tasks it lacks are added
    async with asked.router.lifespan_context(asked):
        transport = httpx.ASGITransport(app=asked)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.post("/tasks", json={"name": "generate"})).status_code == 202


@pytest.mark.parametrize(
    ("peer", "trusted", "proxied"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("198.51.100.1", "127.0.0.1", False),  # untrusted: neither header counts
    ],
)
async def test_serve_reads_the_prefix_from_the_proxy_before_the_client_address(
    peer: str, trusted: str, proxied: bool
) -> None:
    """uvicorn's proxy headers replace the peer with the X-Forwarded-For client: the
    prefix must be judged by the peer, the proxy, first."""
    from sse_tasks.cli.app import behind_proxy

    seen: list[dict[str, object]] = []

    async def record(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(scope)
        from starlette.responses import Response

        await Response(status_code=204)(scope, receive, send)  # type: ignore[arg-type]

    app = behind_proxy(record, trusted)
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), root_path="/base")
    headers = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Prefix": "/jobs"}
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
        assert (await http.get("/tasks", headers=headers)).status_code == 204
    got = (seen[0]["client"], seen[0]["root_path"], seen[0]["path"])
    if proxied:
        assert got == (("203.0.113.5", 0), "/jobs", "/jobs/tasks")
    else:
        assert got == ((peer, 40000), "/base", "/tasks")


def test_the_dashboard_is_served_only_when_asked() -> None:
    """``sse-tasks serve`` with ``$SSE_TASKS_DASHBOARD=1`` (``--dashboard``) serves /dashboard;
    without it, 404."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    for extra, status in (({"SSE_TASKS_DASHBOARD": "1"}, 200), ({}, 404)):
        port = free_port()
        command = [sys.executable, "-m", "sse_tasks", "serve", "--port", str(port), "--log-level", "error"]
        server = subprocess.Popen(command, env={**env, **extra})
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda url=url: _answers(url), "serve to answer", timeout=30)
            answer = httpx.get(f"{url}/dashboard", timeout=10)
        finally:
            server.terminate()
            server.wait(30)
        assert answer.status_code == status
        assert ("<title>sse-tasks · dashboard</title>" in answer.text) is (status == 200)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
