"""``sse-tasks serve``'s configuration: one frozen object, validated once, handed on.

``serve`` builds a :class:`ServeConfig` from its options (click reads each one from
``SSE_TASKS_<OPTION>`` too) and hands it to what it runs, as uvicorn hands its
``Config`` to its server and protocols: the app factory
(:func:`~sse_tasks.cli.app.served_app`), the HTTP protocol
(:func:`~sse_tasks.cli.protocol.protocol_for`) and uvicorn. In the process that built
it, nothing reads it back from ``os.environ``.

``--workers`` is the one place the environment carries it. uvicorn starts each worker
as a new process that imports the app by name (``sse_tasks.cli.app:_worker_app``) and
calls it with no arguments, so ``serve`` puts the configuration as JSON in one variable,
:data:`WORKERS_ENV_VAR` (``SSE_TASKS_SERVE_CONFIG``), for the workers to inherit, and
only that factory reads it. (The protocol needs no variable: uvicorn sends its own
``Config``, which holds the protocol, to each worker.) The variable is not a setting:
set the options, or their ``SSE_TASKS_<OPTION>`` variables. It holds the token secret,
as ``SSE_TASKS_TOKEN_SECRET`` would: the same user can read a process's environment, a
``ps`` listing does not show it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..web.auth import TaskTokens
from ..web.cors import check_cors
from ..web.proxy import TrustedProxies, check_prefix

#: The variable ``serve --workers`` passes its configuration to its workers in (JSON).
WORKERS_ENV_VAR = "SSE_TASKS_SERVE_CONFIG"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_SIZE = 64 * 1024
MIN_MAX_HEADER_SIZE = 1024
MAX_WORKERS = 64


class ServeConfigError(ValueError):
    """A value :class:`ServeConfig` refuses, told in one line; ``option`` names its option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def _option(name: str) -> str:
    return "--cors-origin" if name == "cors_origins" else "--" + name.replace("_", "-")


@dataclass(frozen=True)
class ServeConfig:
    """What ``sse-tasks serve`` runs: one field per option (``cors_origins`` is the
    repeated ``--cors-origin``), the same defaults; ``None`` leaves the hub's own setting.

    Raises :class:`ServeConfigError` (a ``ValueError``) for a value of the wrong type or
    out of range, naming the option. ``root_path`` is kept as :func:`check_prefix`
    returns it (``/jobs/`` becomes ``/jobs``).
    """

    app: str | None = None
    demo: bool | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    broker: str | None = None
    workers: int = 1
    heartbeat: float | None = None
    log_level: str = "info"
    token_secret: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool | None = None
    metrics: bool | None = None
    dashboard: bool | None = None
    max_streams: int | None = None
    max_streams_per_client: int | None = None
    max_stream_lifetime: float | None = None
    timeout_keep_alive: int = 5
    limit_concurrency: int | None = None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    root_path: str = ""
    forwarded_allow_ips: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if isinstance(self.cors_origins, list):  # as JSON has it
            object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        self._check_types()
        self._check_values()
        self._check_web()

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value, hint = getattr(self, item.name), hints[item.name]
            if not _conforms(value, hint):
                expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("NoneType", "None")
                # The type, not the value: it may be the token secret.
                raise ServeConfigError(_option(item.name), f"expected {expected}, got {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ServeConfigError(_option(item.name), f"must be a finite number, got {value}")

    def _check_values(self) -> None:
        minimum: dict[str, float] = {
            "port": 0,
            "workers": 1,
            "heartbeat": 0,
            "max_streams": 0,
            "max_streams_per_client": 1,
            "max_stream_lifetime": 1,
            "timeout_keep_alive": 0,
            "limit_concurrency": 1,
            "header_timeout": 0.01,
            "max_header_size": MIN_MAX_HEADER_SIZE,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ServeConfigError(_option(name), f"must be at least {low}, got {value}")
        for name, high in (("port", 65535), ("workers", MAX_WORKERS)):
            if getattr(self, name) > high:
                raise ServeConfigError(_option(name), f"must be at most {high}, got {getattr(self, name)}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ServeConfigError("--log-level", f"{self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.lower())
        if self.app is not None:
            split_app_spec(self.app)
        if self.workers > 1 and self.broker_url.startswith("memory:"):
            raise ServeConfigError(
                "--workers",
                f"{self.workers} workers need a shared broker: each memory:// worker would see only "
                "its own tasks. Use --broker redis://host:port/db.",
            )

    def _check_web(self) -> None:
        """What the web layer would refuse later, refused now under the option's name."""
        try:
            check_cors(self.cors_origins, bool(self.cors_credentials))
        except ValueError as exc:
            raise ServeConfigError("--cors-origin", str(exc)) from None
        if self.token_secret is not None:
            try:
                TaskTokens(self.token_secret)
            except ValueError as exc:
                raise ServeConfigError("--token-secret", str(exc)) from None
        try:
            object.__setattr__(self, "root_path", check_prefix(self.root_path))
        except ValueError as exc:
            raise ServeConfigError("--root-path", str(exc)) from None
        try:
            TrustedProxies(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ServeConfigError("--forwarded-allow-ips", str(exc)) from None

    @property
    def broker_url(self) -> str:
        """``broker``, else the default ``memory://``."""
        return self.broker or "memory://"

    def to_json(self) -> str:
        """The configuration as one JSON object (what :meth:`from_json` reads)."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The configuration :meth:`to_json` wrote, validated again.

        Raises ``ValueError`` for text that is not such an object (an unknown key, a
        value of the wrong type, a value out of range).
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"a serve configuration is a JSON object: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"a serve configuration is a JSON object, not {type(data).__name__}")
        unknown = set(data) - {item.name for item in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown serve configuration keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def split_app_spec(spec: str) -> tuple[str, str]:
    """``module:attribute`` as its two parts; :class:`ServeConfigError` for anything else."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ServeConfigError("--app", f"expected module:attribute, got {spec!r}")
    return module_name, attribute


def _conforms(value: Any, hint: Any) -> bool:
    """``value`` is of type ``hint`` (the few kinds a ServeConfig field has)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    if hint is float:  # an int is a float here, as in JSON
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return value is None if hint is type(None) else isinstance(value, hint)
