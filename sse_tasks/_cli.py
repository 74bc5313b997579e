"""The ``sse-tasks`` command: ``serve``, ``watch`` and ``submit``."""

from __future__ import annotations

import copy
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ._auth import TaskTokens
from ._cors import check_cors
from ._hub import TaskHub

if TYPE_CHECKING:
    from .brokers import Broker

_ENV = "SSE_TASKS_"


class ConfigError(click.ClickException):
    """A setting that cannot work here, told in one line: ``Error: …``, exit status 2.

    For what click's own checks cannot see (a missing extra, an app that does not
    import); a malformed value is a ``click.BadParameter`` instead.
    """

    exit_code = 2


def _cwd_on_path() -> None:
    """Put the current directory first on ``sys.path``, as uvicorn does for its app.

    ``python -m`` does so already; the ``sse-tasks`` script starts with its own
    directory there instead, so ``--app examples.fastapi_app:hub`` would not import.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_hub(spec: str) -> TaskHub:
    """Import ``module:attribute`` and return the TaskHub it names (or a factory's result).

    The module is looked for in the current directory first, as uvicorn does.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected module:attribute, got {spec!r}", param_hint="'--app'")
    _cwd_on_path()
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"--app {spec!r}: no module named {module_name!r} here: run from the directory "
                f"that holds it, or install its package"
            ) from exc
        raise ConfigError(f"--app {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: importing {module_name!r} failed: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"--app {spec!r}: {module_name!r} has no attribute {attribute!r}: "
                f"name the TaskHub, e.g. {module_name}:hub"
            ) from None
    if not isinstance(target, TaskHub) and callable(target):
        target = target()
    if not isinstance(target, TaskHub):
        raise ConfigError(
            f"--app {spec!r} is a {type(target).__name__}, not a TaskHub "
            f"(name a TaskHub, or a function that returns one)"
        )
    return target


def _broker(url: str | None) -> Broker:
    """The broker for ``url``; a bad URL or a missing extra is a one-line error."""
    from .brokers import broker_from_url

    try:
        return broker_from_url(url)
    except ValueError as exc:
        if isinstance(exc.__cause__, ImportError):
            raise ConfigError(str(exc)) from exc
        raise click.BadParameter(str(exc), param_hint="'--broker'") from exc


def _check_metrics() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"/metrics (--metrics) needs the metrics extra: pip install 'sse-tasks[metrics]' ({exc})"
        ) from exc


def create_server_app(
    app: str | None = None,
    demo: bool | None = None,
    broker: str | None = None,
    heartbeat: float | None = None,
    **hub_options: Any,
) -> Any:
    """The ASGI app ``sse-tasks serve`` runs: the hub's API at the root, the demo page at ``/``.

    ``hub_options`` (``tokens``, ``cors_origins``, ``metrics``, …) override the hub's
    settings; None values are ignored.
    """
    from ._routes import build_app
    from .demo import register_demo_tasks
    from .demo.page import page_routes

    options: dict[str, Any] = {k: v for k, v in hub_options.items() if v is not None}
    if heartbeat is not None:
        options["heartbeat"] = heartbeat
    if isinstance(options.get("tokens"), str):
        options["tokens"] = TaskTokens(options["tokens"])
    if "cors_origins" in options:
        options["cors_origins"] = tuple(
            check_cors(options["cors_origins"], options.get("cors_credentials", False))
        )
    if app:
        hub = load_hub(app)
        per_client = options.pop("max_streams_per_client", None)
        if per_client is not None:
            hub.client_streams.limit = per_client
        for key, value in options.items():
            setattr(hub, key, value)
    else:
        hub = TaskHub(_broker(broker), **options)
    if demo is None:
        demo = app is None
    if demo:
        register_demo_tasks(hub)
    if hub.metrics:
        _check_metrics()
    return build_app(hub, page_routes() if demo else ())


def _app_from_env() -> Any:
    """Factory for ``uvicorn --factory`` (used with ``--workers``): options from the environment."""
    env = os.environ

    def number(key: str, kind: type[float] | type[int] = float) -> Any:
        raw = env.get(_ENV + key)
        return kind(raw) if raw else None

    def flag(key: str) -> bool | None:
        raw = env.get(_ENV + key)
        return None if raw is None else raw.lower() in ("1", "true", "yes")

    origins = env.get(_ENV + "CORS_ORIGIN")
    return create_server_app(
        app=env.get(_ENV + "APP") or None,
        demo=flag("DEMO"),
        broker=env.get(_ENV + "BROKER") or None,
        heartbeat=number("HEARTBEAT"),
        tokens=env.get(_ENV + "TOKEN_SECRET") or None,
        cors_origins=origins.split() if origins else None,
        cors_credentials=flag("CORS_CREDENTIALS"),
        metrics=flag("METRICS"),
        max_streams=number("MAX_STREAMS", int),
        max_streams_per_client=number("MAX_STREAMS_PER_CLIENT", int),
        max_stream_lifetime=number("MAX_STREAM_LIFETIME"),
    )


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging setup with ``token=…`` redacted from the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": "sse_tasks._auth.RedactTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    config["loggers"]["sse_tasks"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


@click.group(context_settings={"auto_envvar_prefix": "SSE_TASKS", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sse-tasks")
def main() -> None:
    """Run work after the response and stream its status over Server-Sent Events."""


# Subcommands would read SSE_TASKS_SERVE_<OPTION>: serve's options are SSE_TASKS_<OPTION>,
# the names its worker processes read too.
@main.command(context_settings={"auto_envvar_prefix": "SSE_TASKS"})
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
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"], case_sensitive=False),
)
@click.option(
    "--token-secret",
    metavar="SECRET",
    help="Issue per-task tokens signed with this secret (prefer $SSE_TASKS_TOKEN_SECRET).",
)
@click.option("--cors-origin", multiple=True, metavar="ORIGIN", help="Allow this exact origin (repeatable).")
@click.option(
    "--cors-credentials/--no-cors-credentials", default=None, help="Allow cookies for those origins."
)
@click.option("--metrics/--no-metrics", default=None, help="Serve /metrics (needs sse-tasks[metrics]).")
@click.option("--max-streams", type=click.IntRange(min=0), help="Open streams per process (default 10000).")
@click.option(
    "--max-streams-per-client", type=click.IntRange(min=1), help="Open streams per address (default: none)."
)
@click.option(
    "--max-stream-lifetime", type=click.FloatRange(min=1), help="End streams after SECONDS (clients resume)."
)
@click.option(
    "--timeout-keep-alive",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Close idle keep-alive connections after SECONDS.",
)
@click.option(
    "--limit-concurrency", type=click.IntRange(min=1), help="Connections before uvicorn answers 503."
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Close a connection whose request line and headers take longer than SECONDS.",
)
@click.option(
    "--max-header-size",
    default=64 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Answer 431 and close a connection whose request line and headers exceed BYTES.",
)
def serve(
    app: str | None,
    demo: bool | None,
    host: str,
    port: int,
    broker: str | None,
    workers: int,
    heartbeat: float | None,
    log_level: str,
    token_secret: str | None,
    cors_origin: tuple[str, ...],
    cors_credentials: bool | None,
    metrics: bool | None,
    max_streams: int | None,
    max_streams_per_client: int | None,
    max_stream_lifetime: float | None,
    timeout_keep_alive: int,
    limit_concurrency: int | None,
    header_timeout: float,
    max_header_size: int,
) -> None:
    """Serve the task API (/tasks, /events) and, in demo mode, a live page at /.

    Every option can also be set as SSE_TASKS_<OPTION> (e.g. SSE_TASKS_BROKER).
    """
    import uvicorn

    from ._protocol import HeaderTimeoutProtocol

    _cwd_on_path()  # before uvicorn spawns --workers: they inherit sys.path
    broker_url = broker or os.environ.get(_ENV + "BROKER") or "memory://"
    if workers > 1 and broker_url.startswith("memory:"):
        raise click.UsageError(
            "--workers > 1 needs a shared broker: each memory:// worker would see only its "
            "own tasks. Use --broker redis://host:port/db."
        )
    try:
        check_cors(cors_origin, bool(cors_credentials))
        if token_secret:
            TaskTokens(token_secret)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings: dict[str, Any] = {
        "APP": app,
        "BROKER": broker_url,
        "HEARTBEAT": heartbeat,
        "TOKEN_SECRET": token_secret,
        "CORS_ORIGIN": " ".join(cors_origin) or None,
        "MAX_STREAMS": max_streams,
        "MAX_STREAMS_PER_CLIENT": max_streams_per_client,
        "MAX_STREAM_LIFETIME": max_stream_lifetime,
        "HEADER_TIMEOUT": header_timeout,
        "MAX_HEADER_SIZE": max_header_size,
    }
    for key, value in (("DEMO", demo), ("CORS_CREDENTIALS", cors_credentials), ("METRICS", metrics)):
        if value is not None:
            settings[key] = "1" if value else "0"
    for key, value in settings.items():
        if value is not None:
            os.environ[_ENV + key] = str(value)
    # Build the app here, so a setting that cannot work (a missing extra, an --app that
    # does not import) is one line before anything starts, not a traceback per worker.
    # One process serves this app; --workers each build their own from the environment.
    served: Any = _app_from_env()
    if workers > 1:
        served = "sse_tasks._cli:_app_from_env"
    uvicorn.run(
        served,
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=log_config(log_level),
        timeout_graceful_shutdown=None,
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
        http=HeaderTimeoutProtocol,
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

    from ._watch import WatchClient, watch_task
    from .client import split_task_url

    try:
        base, task_id = split_task_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    params = dict(parse_qsl(urlsplit(url).query))  # e.g. an access token: keep it
    params.pop("last_event_id", None)
    with WatchClient(base, headers=_client_headers(headers), params=params, retries=retries) as client:
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
    from ._watch import EXIT_UNREACHABLE, WatchClient, parse_params, watch_task

    try:
        values = parse_params(params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY=VALUE") from None
    with WatchClient(url, headers=_client_headers(headers), retries=retries) as client:
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
