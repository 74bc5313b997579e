"""The ``sse-tasks`` command: ``serve``, ``watch`` and ``submit``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .._core.lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from .app import create_server_app, load_hub, log_config, served_app
    from .config import ServeConfig

__all__ = ["ServeConfig", "create_server_app", "load_hub", "log_config", "main", "served_app"]

# The server's names are imported on first use: ``watch`` and ``submit`` are clients,
# and start without the server's stack (starlette, uvicorn) and the app it loads.
_SERVER_NAMES = {
    "ServeConfig": "config",
    **dict.fromkeys(("create_server_app", "load_hub", "log_config", "served_app"), "app"),
}


__getattr__, __dir__ = _lazy_names(__name__, _SERVER_NAMES, globals())


class _Commands(click.Group):
    """The group, with ``serve`` imported only when it is run or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "serve"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "serve":
            from .serve import serve

            return serve
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # A command's bad option or value is one line, "Error: …", like every other
            # configuration error: without its context click would not print the usage.
            exc.ctx = None
            raise


@click.group(
    cls=_Commands,
    context_settings={"auto_envvar_prefix": "SSE_TASKS", "help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="sse-tasks")
def main() -> None:
    """Run work after the response and stream its status over Server-Sent Events."""


def _client_headers(headers: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {header!r}", param_hint="--header")
        if not header.isascii() or not header.isprintable():
            raise click.BadParameter(
                f"a header is printable ASCII (percent-encode or base64 anything else), got {header!r}",
                param_hint="--header",
            )
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

    from ..client import split_task_url
    from .watch import WatchClient, watch_task

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
    from urllib.parse import quote

    from .._core.errors import SSETasksError
    from .watch import EXIT_UNREACHABLE, WatchClient, parse_params, watch_task

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
            click.echo(f"{client.base_url}/tasks/{quote(task.id, safe='')}")  # a URL `watch` takes back
        if then_watch:
            sys.exit(watch_task(client, task.id, sys.stdout))
