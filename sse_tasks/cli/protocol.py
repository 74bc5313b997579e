"""uvicorn's HTTP protocol with a deadline for the request head (slowloris).

uvicorn times out idle keep-alive connections but not a client that opens a connection
and sends its request line and headers slowly, or never: each such connection is held
for as long as the client likes. ``sse-tasks serve`` uses this protocol so a request's
head must be complete within ``header_timeout`` seconds of the connection (or of the
previous response), or the connection is closed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

DEFAULT_HEADER_TIMEOUT = 10.0
#: Read by every worker process (``serve`` sets it from ``--header-timeout``).
ENV_VAR = "SSE_TASKS_HEADER_TIMEOUT"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request head is late.

    The deadline is ``$SSE_TASKS_HEADER_TIMEOUT`` seconds (default 10).
    """

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        self.header_timeout = float(os.environ.get(ENV_VAR) or DEFAULT_HEADER_TIMEOUT)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_deadline is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
