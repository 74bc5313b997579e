"""``sse-tasks serve``: uvicorn with the hub's app, its options validated before it starts.

The options become one frozen :class:`~sse_tasks.cli.config.ServeConfig`, handed to the
app factory, the HTTP protocol and uvicorn (:func:`run`); in one process nothing goes
through ``os.environ``. With ``--workers`` the workers get it as JSON in one
environment variable, ``SSE_TASKS_SERVE_CONFIG``, read only by their app factory (see
:mod:`sse_tasks.cli.config`). The user's own variables (``SSE_TASKS_BROKER``,
``SSE_TASKS_ROOT_PATH``, …) are read by click, as every option's default.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any, cast

import click

from .config import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    LOG_LEVELS,
    MAX_WORKERS,
    MIN_MAX_HEADER_SIZE,
    WORKERS_ENV_VAR,
    ServeConfig,
    ServeConfigError,
)


# As a subcommand it would read SSE_TASKS_SERVE_<OPTION>: serve's options are
# SSE_TASKS_<OPTION>, as documented.
@click.command(context_settings={"auto_envvar_prefix": "SSE_TASKS"})
@click.option("--app", "app", metavar="MODULE:HUB", help="Serve this TaskHub (default: the demo).")
@click.option(
    "--demo/--no-demo",
    default=None,
    help="Register the demo tasks the hub lacks and serve the page (default when no --app, or when "
    "the app's hub has every demo task).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--broker", metavar="URL", help="memory:// (default), redis://host:port/db or redis+cluster://host:port,…"
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=int,
    help=f"Worker processes (1 to {MAX_WORKERS}); more than 1 needs a redis:// broker.",
)
@click.option("--heartbeat", type=float, help="Seconds between SSE heartbeats (default 15).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
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
@click.option("--dashboard/--no-dashboard", default=None, help="Serve the operations page at /dashboard.")
@click.option("--max-streams", type=int, help="Open streams per process (default 10000).")
@click.option("--max-streams-per-client", type=int, help="Open streams per address (default: none).")
@click.option("--max-stream-lifetime", type=float, help="End streams after SECONDS (clients resume).")
@click.option(
    "--timeout-keep-alive",
    default=5,
    show_default=True,
    type=int,
    help="Close idle keep-alive connections after SECONDS.",
)
@click.option("--limit-concurrency", type=int, help="Connections before uvicorn answers 503.")
@click.option(
    "--header-timeout",
    default=DEFAULT_HEADER_TIMEOUT,
    show_default=True,
    type=float,
    help="Close a connection whose request line and headers take longer than SECONDS.",
)
@click.option(
    "--max-header-size",
    default=DEFAULT_MAX_HEADER_SIZE,
    show_default=True,
    type=int,
    help=f"Answer 431 and close a connection whose request line and headers exceed BYTES "
    f"(at least {MIN_MAX_HEADER_SIZE}).",
)
@click.option(
    "--root-path",
    default="",
    metavar="PREFIX",
    help="The path prefix a proxy serves the hub under and strips (e.g. /jobs): links, the page, "
    "/sse-tasks.js and /openapi.json include it.",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="IPS",
    help="Comma-separated proxy addresses or networks (or *) whose X-Forwarded-For, -Proto and "
    "-Prefix are believed (default: $FORWARDED_ALLOW_IPS or 127.0.0.1).",
)
def serve(cors_origin: tuple[str, ...], forwarded_allow_ips: str | None, **options: Any) -> None:
    """Serve the task API (/tasks, /events) and, in demo mode, a live page at /.

    Every option can also be set as SSE_TASKS_<OPTION> (e.g. SSE_TASKS_BROKER).
    """
    # uvicorn's own variable still counts, as it did before serve had this option.
    trusted = forwarded_allow_ips or os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1"
    try:
        config = ServeConfig(cors_origins=cors_origin, forwarded_allow_ips=trusted, **options)
    except ServeConfigError as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None
    run(config)


def run(config: ServeConfig) -> None:
    """Serve ``config`` with uvicorn until it is stopped (SIGINT, SIGTERM).

    The app is built here first, so a setting that cannot work (a missing extra, an
    ``--app`` that does not import) is one line before anything starts, not a traceback
    per worker. One process serves that app; ``--workers`` each build their own from
    ``config``. Raises :class:`~sse_tasks.cli.app.ConfigError` or ``click.BadParameter``.
    """
    import uvicorn

    # The server's stack is imported only to serve: an option's error, or --help, is told
    # without it (in a third of the time).
    from .app import _cwd_on_path, _environment_variable, log_config, served_app
    from .protocol import protocol_for

    _cwd_on_path()  # before uvicorn spawns --workers: they inherit sys.path
    served: Any = served_app(config)
    _check_address(config.host, config.port)
    if config.workers > 1:
        served = "sse_tasks.cli.app:_worker_app"
    # The workers inherit the environment as it is when they start; this process does
    # not read the variable.
    with _environment_variable(WORKERS_ENV_VAR, config.to_json() if config.workers > 1 else None):
        uvicorn.run(
            served,
            factory=config.workers > 1,
            host=config.host,
            port=config.port,
            root_path=config.root_path,
            proxy_headers=False,  # behind_proxy applies them, after reading X-Forwarded-Prefix
            workers=config.workers,
            log_level=config.log_level,
            log_config=log_config(config.log_level),
            timeout_graceful_shutdown=None,
            timeout_keep_alive=config.timeout_keep_alive,
            limit_concurrency=config.limit_concurrency,
            # uvicorn calls it as it calls a protocol class, with keywords.
            http=cast("type[asyncio.Protocol]", protocol_for(config)),
        )


def _check_address(host: str, port: int) -> None:
    """Raise :class:`ConfigError` if ``host:port`` cannot be listened on (in use, not an
    address of this machine): one line, where uvicorn would log an error after the app's
    startup and exit with status 3. Bound as uvicorn binds it, then let go."""
    from .app import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "the port is in use"
            else:  # (a name that does not resolve is a gaierror, its errno negative)
                reason = (exc.strerror or str(exc)).lower()
            raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
