"""What ``sse-tasks serve`` serves: the hub it loads or makes, checked, as an ASGI app.

Every configuration error here is a :class:`ConfigError`: one line, exit status 2.
:func:`served_app` is the app factory ``serve`` hands its :class:`ServeConfig` to;
``_worker_app`` is the same factory in a ``--workers`` process, and the one reader of
``$SSE_TASKS_SERVE_CONFIG`` (see :mod:`sse_tasks.cli.config`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import click

from .._hub import TaskHub
from ..web.auth import TaskTokens
from .config import WORKERS_ENV_VAR, ServeConfig, ServeConfigError, split_app_spec

if TYPE_CHECKING:
    from ..brokers import Broker

#: What ``TaskHub()`` reads for its broker, and what an ``--app`` module may read.
BROKER_ENV_VAR = "SSE_TASKS_BROKER"


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

    The module is looked for in the current directory first, as uvicorn does. Raises
    :class:`ConfigError` for anything else (an ASGI app, a factory that raises or
    returns something else), naming the module's TaskHubs when it has some.
    """
    try:
        module_name, attribute = split_app_spec(spec)
    except ServeConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="'--app'") from None
    _cwd_on_path()
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"--app {spec!r}: no module named {module_name!r} here: run from the directory "
                f"that holds it, or install its package"
            ) from exc
        raise ConfigError(f"--app {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the module raised while it was imported (a bad setting, say)
        raise ConfigError(
            f"--app {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"--app {spec!r}: {module_name!r} has no attribute {attribute!r}: "
                f"{_hub_hint(module, module_name)}"
            ) from None
        except Exception as exc:  # a module's or an object's own __getattr__ that raises
            raise ConfigError(
                f"--app {spec!r}: reading {part!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(target, TaskHub):
        return target
    if _is_asgi_app(target):
        raise ConfigError(
            f"--app {spec!r} is {_describe_app(target)}, not a TaskHub: {_hub_hint(module, module_name)}"
        )
    if not _is_factory(target):
        raise ConfigError(
            f"--app {spec!r} is {_a(type(target).__name__)}, not a TaskHub: {_hub_hint(module, module_name)}"
        )
    call = f"{attribute}()"
    try:
        made = target()
    except Exception as exc:
        raise ConfigError(f"--app {spec!r}: calling {call} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, TaskHub):
        raise ConfigError(
            f"--app {spec!r}: {call} returned {_a(type(made).__name__)}, not a TaskHub: "
            f"{_hub_hint(module, module_name)}"
        )
    return made


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _hub_hint(module: Any, module_name: str) -> str:
    """What to name instead: the module's TaskHubs, else what ``--app`` takes."""
    hubs = [name for name, value in vars(module).items() if isinstance(value, TaskHub)]
    if hubs:
        return "did you mean " + " or ".join(f"{module_name}:{name}" for name in hubs) + "?"
    return (
        f"{module_name!r} has no TaskHub at module level: name a TaskHub (module:hub) "
        f"or a function that returns one"
    )


def _is_asgi_app(target: Any) -> bool:
    """An ASGI application: a function or an object called as ``app(scope, receive, send)``."""
    if isinstance(target, type) or not callable(target):
        return False
    call = target if inspect.isroutine(target) else target.__call__  # bound: no ``self``
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) == 3


def _describe_app(target: Any) -> str:
    if inspect.isroutine(target):
        return "an ASGI application (a function)"
    return f"{_a(type(target).__name__)} application"


def _is_factory(target: Any) -> bool:
    """Something to call with no arguments for a TaskHub: a function (or a class)."""
    if not callable(target):
        return False
    try:
        inspect.signature(target).bind()
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): try calling it
        pass
    return True


def _broker(url: str | None) -> Broker:
    """The broker for ``url``; a bad URL or a missing extra is a one-line error."""
    from ..brokers import broker_from_url

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
    """The ASGI app ``sse-tasks serve`` runs: the hub's API at the root, the demo page at ``/``
    (by default without ``--app``, or when the app's hub has every demo task's name).

    ``broker`` is the demo hub's; with ``app``, the module sees it as ``$SSE_TASKS_BROKER``
    while it loads. ``hub_options`` (``tokens``, ``cors_origins``, ``metrics``, …) override
    the hub's settings; None values are ignored.
    """
    from ..demo import DEMO_TASKS, register_demo_tasks
    from ..demo.html_pages import html_page_routes
    from ..demo.page import page_routes

    options: dict[str, Any] = {k: v for k, v in hub_options.items() if v is not None}
    if heartbeat is not None:
        options["heartbeat"] = heartbeat
    if isinstance(options.get("tokens"), str):
        options["tokens"] = TaskTokens(options["tokens"])
    if "cors_origins" in options:
        options["cors_origins"] = tuple(options["cors_origins"])
    if app:
        with _broker_for_the_app(broker):
            hub = load_hub(app)
        try:
            hub.configure(**options)  # validated like the constructor's arguments
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--app {app!r}: {exc}") from None
    else:
        hub = TaskHub(_broker(broker), **options)
    if demo is None:  # an app that offers the demo tasks itself (on Celery, say) gets the page
        demo = app is None or all(name in hub.registry for name in DEMO_TASKS)
    if demo:
        register_demo_tasks(hub)
    if hub.settings.metrics:
        _check_metrics()
    return hub.app_with([*page_routes(), *html_page_routes(hub)] if demo else ())


def behind_proxy(app: Any, forwarded_allow_ips: str) -> Any:
    """``app`` as ``serve`` runs it: uvicorn's ``X-Forwarded-For``/``-Proto`` handling for
    the proxies ``forwarded_allow_ips`` names, and their ``X-Forwarded-Prefix`` as the
    request's root path (read first, while the peer is still the proxy)."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from ..web.proxy import ForwardedPrefix, TrustedProxies

    proxied: Any = ProxyHeadersMiddleware(app, trusted_hosts=forwarded_allow_ips)  # uvicorn's ASGI types
    return ForwardedPrefix(proxied, TrustedProxies(forwarded_allow_ips))


@contextmanager
def _environment_variable(name: str, value: str | None) -> Iterator[None]:
    """``$name`` set to ``value`` (unless None) inside the block, as it was afterwards."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _broker_for_the_app(url: str | None) -> AbstractContextManager[None]:
    """``url`` (``--broker``, when given) as ``$SSE_TASKS_BROKER`` while an ``--app`` module
    is imported and its factory called.

    Not ``serve``'s configuration read back (the app factory gets that as an object) but
    the app's own documented input: what ``TaskHub()`` reads for its broker, and what
    modules such as ``examples/celery_app.py`` read themselves. The environment is as
    it was once the hub is made; without ``--broker`` the app sees the variable as the
    user set it, or not at all.
    """
    return _environment_variable(BROKER_ENV_VAR, url)


def served_app(config: ServeConfig) -> Any:
    """The ASGI app ``serve`` runs for ``config``: :func:`create_server_app` behind the
    proxies ``config.forwarded_allow_ips`` trusts (:func:`behind_proxy`).

    Raises :class:`ConfigError` (or ``click.BadParameter``) for what cannot work here.
    """
    app = create_server_app(
        app=config.app,
        demo=config.demo,
        broker=config.broker,
        heartbeat=config.heartbeat,
        tokens=config.token_secret,
        cors_origins=config.cors_origins or None,
        cors_credentials=config.cors_credentials,
        metrics=config.metrics,
        dashboard=config.dashboard,
        max_streams=config.max_streams,
        max_streams_per_client=config.max_streams_per_client,
        max_stream_lifetime=config.max_stream_lifetime,
    )
    return behind_proxy(app, config.forwarded_allow_ips)


def _worker_app() -> Any:
    """Factory for uvicorn in each ``serve --workers`` process: :func:`served_app` of the
    configuration ``serve`` left in ``$SSE_TASKS_SERVE_CONFIG``."""
    text = os.environ.get(WORKERS_ENV_VAR)
    if text is None:
        raise RuntimeError(f"${WORKERS_ENV_VAR} is not set: this factory serves 'sse-tasks serve --workers'")
    return served_app(ServeConfig.from_json(text))


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging setup with ``token=…`` redacted from the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": "sse_tasks.web.auth.RedactTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    config["loggers"]["sse_tasks"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config
