"""The ``sse-tasks`` command: ``serve``, ``watch`` and ``submit``."""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from ._hub import TaskHub

_ENV = "SSE_TASKS_"


def load_hub(spec: str) -> TaskHub:
    """Import ``module:attribute`` and return the TaskHub it names (or a factory's result)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected module:attribute, got {spec!r}", param_hint="--app")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}", param_hint="--app") from exc
    if not isinstance(target, TaskHub) and callable(target):
        target = target()
    if not isinstance(target, TaskHub):
        raise click.BadParameter(f"{spec!r} is not a TaskHub", param_hint="--app")
    return target


def create_server_app(
    app: str | None = None,
    demo: bool | None = None,
    broker: str | None = None,
    heartbeat: float | None = None,
) -> Any:
    """The ASGI app ``sse-tasks serve`` runs: the hub's API at the root, the demo page at ``/``."""
    from ._routes import build_app
    from .demo import register_demo_tasks
    from .demo.page import page_routes

    options: dict[str, Any] = {}
    if heartbeat is not None:
        options["heartbeat"] = heartbeat
    if app:
        hub = load_hub(app)
        for key, value in options.items():
            setattr(hub, key, value)
    else:
        hub = TaskHub(broker, **options)
    if demo is None:
        demo = app is None
    if demo:
        register_demo_tasks(hub)
    return build_app(hub, page_routes() if demo else ())


def _app_from_env() -> Any:
    """Factory for ``uvicorn --factory`` (used with ``--workers``): options from the environment."""
    heartbeat = os.environ.get(_ENV + "HEARTBEAT")
    demo = os.environ.get(_ENV + "DEMO")
    return create_server_app(
        app=os.environ.get(_ENV + "APP") or None,
        demo=None if demo is None else demo.lower() in ("1", "true", "yes"),
        broker=os.environ.get(_ENV + "BROKER") or None,
        heartbeat=float(heartbeat) if heartbeat else None,
    )


@click.group(context_settings={"auto_envvar_prefix": "SSE_TASKS", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sse-tasks")
def main() -> None:
    """Run work after the response and stream its status over Server-Sent Events."""


@main.command()
@click.option("--app", "app", metavar="MODULE:HUB", help="Serve this TaskHub (default: the demo).")
@click.option(
    "--demo/--no-demo", default=None, help="Register the demo tasks and page (default when no --app)."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--broker", metavar="URL", help="memory:// (default) or redis://host:port/db.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--heartbeat", type=click.FloatRange(min=0), help="Seconds between SSE heartbeats (default 15)."
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    app: str | None,
    demo: bool | None,
    host: str,
    port: int,
    broker: str | None,
    workers: int,
    heartbeat: float | None,
    log_level: str,
) -> None:
    """Serve the task API (/tasks, /events) and, in demo mode, a live page at /.

    Every option can also be set as SSE_TASKS_<OPTION> (e.g. SSE_TASKS_BROKER).
    """
    import uvicorn

    broker_url = broker or os.environ.get(_ENV + "BROKER") or "memory://"
    if workers > 1 and broker_url.startswith("memory:"):
        raise click.UsageError(
            "--workers > 1 needs a shared broker: each memory:// worker would see only its "
            "own tasks. Use --broker redis://host:port/db."
        )
    settings = {"APP": app, "BROKER": broker_url, "HEARTBEAT": heartbeat}
    if demo is not None:
        settings["DEMO"] = "1" if demo else "0"
    for key, value in settings.items():
        if value is not None:
            os.environ[_ENV + key] = str(value)
    uvicorn.run(
        "sse_tasks._cli:_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=None,
    )


def _client_headers(headers: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {header!r}", param_hint="--header")
        parsed[name.strip()] = value.strip()
    return parsed


_header_option = click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Send this header with every request (e.g. Authorization). Repeatable.",
)
_retries_option = click.option(
    "--retries",
    default=5,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Reconnection attempts in a row before giving up.",
)


@main.command()
@click.argument("url")
@_header_option
@_retries_option
def watch(url: str, headers: tuple[str, ...], retries: int) -> None:
    """Follow one task until it ends: a progress bar on a terminal, one line per change otherwise.

    URL is the task's URL (http://host/tasks/ID) or its events URL. Exit code: 0
    succeeded, 1 failed, 2 cancelled or unreachable.
    """
    import sys
    from urllib.parse import parse_qsl, urlsplit

    from ._watch import watch_task
    from .client import Client, split_task_url

    try:
        base, task_id = split_task_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    params = dict(parse_qsl(urlsplit(url).query))  # e.g. an access token: keep it
    params.pop("last_event_id", None)
    with Client(base, headers=_client_headers(headers), params=params, retries=retries) as client:
        sys.exit(watch_task(client, task_id, sys.stdout))


@main.command()
@click.argument("url")
@click.argument("name")
@click.argument("params", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--watch", "then_watch", is_flag=True, help="Then follow the task like 'sse-tasks watch'.")
@click.option("--json", "as_json", is_flag=True, help="Print the task's snapshot as JSON, not its URL.")
@_header_option
@_retries_option
def submit(
    url: str,
    name: str,
    params: tuple[str, ...],
    then_watch: bool,
    as_json: bool,
    headers: tuple[str, ...],
    retries: int,
) -> None:
    """Start task NAME on the server at URL (where /tasks is) and print the task's URL.

    Each VALUE is read as JSON when it parses (n=5, flag=true, items='[1, 2]'), else as
    a string (message=hello). With --watch, follow it; the exit code is then watch's.
    """
    import json
    import sys

    from ._errors import SSETasksError
    from ._watch import EXIT_UNREACHABLE, parse_params, watch_task
    from .client import Client

    try:
        values = parse_params(params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY=VALUE") from None
    with Client(url, headers=_client_headers(headers), retries=retries) as client:
        try:
            task = client.submit(name, values)
        except SSETasksError as exc:
            click.echo(f"sse-tasks: {exc.message}", err=True)
            sys.exit(EXIT_UNREACHABLE)
        if as_json:
            click.echo(json.dumps(task.to_dict(), separators=(",", ":")))
        else:
            click.echo(f"{client.base_url}/tasks/{task.id}")
        if then_watch:
            sys.exit(watch_task(client, task.id, sys.stdout))
