"""``sse-tasks serve``: uvicorn with the hub's app, its options validated before it starts."""

from __future__ import annotations

import os
from typing import Any

import click

from ..web.auth import TaskTokens
from ..web.cors import check_cors
from ..web.proxy import TrustedProxies, check_prefix
from .app import ENV, _app_from_env, _cwd_on_path, behind_proxy, log_config


def _root_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_prefix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _trusted(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    # uvicorn's own variable still counts, as it did before serve had this option.
    value = value or os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1"
    try:
        TrustedProxies(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


# As a subcommand it would read SSE_TASKS_SERVE_<OPTION>: serve's options are
# SSE_TASKS_<OPTION>, the names its worker processes read too.
@click.command(context_settings={"auto_envvar_prefix": "SSE_TASKS"})
@click.option("--app", "app", metavar="MODULE:HUB", help="Serve this TaskHub (default: the demo).")
@click.option(
    "--demo/--no-demo",
    default=None,
    help="Register the demo tasks the hub lacks and serve the page (default when no --app, or when "
    "the app's hub has every demo task).",
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
@click.option(
    "--root-path",
    default="",
    callback=_root_path,
    metavar="PREFIX",
    help="The path prefix a proxy serves the hub under and strips (e.g. /jobs): links, the page, "
    "/sse-tasks.js and /openapi.json include it.",
)
@click.option(
    "--forwarded-allow-ips",
    callback=_trusted,
    metavar="IPS",
    help="Comma-separated proxy addresses or networks (or *) whose X-Forwarded-For, -Proto and "
    "-Prefix are believed (default: $FORWARDED_ALLOW_IPS or 127.0.0.1).",
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
    root_path: str,
    forwarded_allow_ips: str,
) -> None:
    """Serve the task API (/tasks, /events) and, in demo mode, a live page at /.

    Every option can also be set as SSE_TASKS_<OPTION> (e.g. SSE_TASKS_BROKER).
    """
    import uvicorn

    from .protocol import HeaderTimeoutProtocol

    _cwd_on_path()  # before uvicorn spawns --workers: they inherit sys.path
    broker_url = broker or os.environ.get(ENV + "BROKER") or "memory://"
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
        # Only when given: an --app module reading $SSE_TASKS_BROKER must not see a default.
        "BROKER": broker,
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
            os.environ[ENV + key] = str(value)
    # Build the app here, so a setting that cannot work (a missing extra, an --app that
    # does not import) is one line before anything starts, not a traceback per worker.
    # One process serves this app; --workers each build their own from the environment.
    served: Any = behind_proxy(_app_from_env(), forwarded_allow_ips)
    if workers > 1:
        os.environ[ENV + "FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
        served = "sse_tasks.cli.app:_served_app_from_env"
    uvicorn.run(
        served,
        factory=workers > 1,
        host=host,
        port=port,
        root_path=root_path,
        proxy_headers=False,  # behind_proxy applies them, after reading X-Forwarded-Prefix
        workers=workers,
        log_level=log_level,
        log_config=log_config(log_level),
        timeout_graceful_shutdown=None,
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
        http=HeaderTimeoutProtocol,
    )
