"""The web layer's settings: one frozen object, validated once when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .auth import Authorizer, Identify, TaskTokens
from .cors import check_cors

if TYPE_CHECKING:
    from .render import HtmlRenderer


@dataclass(frozen=True)
class WebSettings:
    """How the hub's HTTP API and streams behave; see :class:`~sse_tasks.TaskHub` for each.

    Raises ``ValueError`` (or ``TypeError``) for a value out of range, at construction.
    """

    max_streams: int = 10_000
    max_body_size: int = 64 * 1024
    heartbeat: float = 15.0
    send_timeout: float | None = 30.0
    retry: int = 2000
    coalesce_after: int = 256
    max_streams_per_client: int | None = None
    max_stream_lifetime: float | None = None
    body_timeout: float | None = 10.0
    authorize: Authorizer | None = None
    identify: Identify | None = None
    tokens: TaskTokens | None = None
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = False
    metrics: bool = False
    html_renderer: HtmlRenderer | None = None
    dashboard: bool = False

    def __post_init__(self) -> None:
        if self.max_streams < 0 or self.max_body_size < 1 or self.coalesce_after < 0:
            raise ValueError("max_streams and coalesce_after must be >= 0, max_body_size positive")
        if self.max_streams_per_client is not None and self.max_streams_per_client < 1:
            raise ValueError("max_streams_per_client must be positive or None")
        for name in ("max_stream_lifetime", "body_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None")
        if self.send_timeout is not None and not self.send_timeout >= 0:
            raise ValueError("send_timeout must be >= 0 (0: never) or None")
        if not self.heartbeat >= 0 or self.retry < 0:
            raise ValueError("heartbeat and retry must be >= 0")
        if isinstance(self.tokens, str):
            object.__setattr__(self, "tokens", TaskTokens(self.tokens))
        origins = tuple(sorted(check_cors(self.cors_origins, self.cors_credentials)))
        object.__setattr__(self, "cors_origins", origins)

    def replace(self, **changes: Any) -> WebSettings:
        """A copy with ``changes``, validated the same way; ``TypeError`` for an unknown name."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown web settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)
