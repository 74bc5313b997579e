"""uvicorn's HTTP protocol with a deadline and a size limit for the request head.

uvicorn times out idle keep-alive connections but not a client that opens a connection
and sends its request line and headers slowly, or never: each such connection is held
for as long as the client likes (slowloris), with all it has sent so far buffered.
``sse-tasks serve`` uses this protocol so a request's head must be complete within
``header_timeout`` seconds of the connection (or of the previous response), or the
connection is closed; and a head larger than ``max_header_size`` bytes is answered
``431 Request Header Fields Too Large`` and the connection closed. uvicorn builds one per
connection: :func:`protocol_for` is what ``serve`` hands it, with its configuration's limits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .config import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_SIZE, ServeConfig

_TOO_LARGE = b"request header fields too large"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request head is late or too large.

    The deadline is ``header_timeout`` seconds (default 10); the size limit
    ``max_header_size`` bytes (default 64 KiB), counted as the bytes received while the
    head is incomplete, so a head that never ends is cut once it is too large.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_size = max_header_size
        self._head_deadline: asyncio.TimerHandle | None = None
        # Bytes received for the request head being read; None between heads.
        self._head_bytes: int | None = None
        self._heads = 0  # which head that is: counts heads begun on this connection
        self._refused = False
        # This connection's requests not yet answered in full: with pipelined requests,
        # uvicorn's current one is the last, and the response being sent an earlier one.
        self._unanswered: list[RequestResponseCycle] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        reading = self._heads if self._head_bytes is not None else None
        super().data_received(data)
        # Count ``data`` only towards a head that was begun before it and is still not
        # complete: bytes of a body, or of a head completed in ``data``, are not head bytes.
        # (A head begun inside ``data`` is counted from the next read on.)
        if self._head_bytes is not None and reading == self._heads and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_size:
                self._refuse()

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._head_bytes is None:  # a later request on a kept-alive connection
            self._begin_head()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_bytes = None
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_size:  # it came all at once: too large all the same
            self._refuse()
            return
        super().on_headers_complete()
        self._unanswered = [cycle for cycle in self._unanswered if not cycle.response_complete]
        if self.cycle is not None and self.cycle not in self._unanswered:  # (an upgrade makes none)
            self._unanswered.append(self.cycle)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # uvicorn tells only the current request: a response still being sent before a
        # pipelined one (a stream) would write on to the closed connection, for ever.
        unanswered, self._unanswered = self._unanswered, []
        for cycle in unanswered:
            if cycle is not self.cycle and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    def _begin_head(self) -> None:
        self._heads += 1
        self._head_bytes = 0
        self._arm()

    def _refuse(self) -> None:
        """Answer 431 and close: the rest of the request is not read."""
        self._refused = True
        self._head_bytes = None
        self._disarm()
        if self.transport.is_closing():
            return
        self.logger.warning("Request head over %d bytes: answered 431, closing.", self.max_header_size)
        content = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(_TOO_LARGE)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _TOO_LARGE,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()

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


def protocol_for(config: ServeConfig) -> Callable[..., HeaderTimeoutProtocol]:
    """The HTTP protocol for uvicorn's ``http=``: :class:`HeaderTimeoutProtocol` with
    ``config``'s head deadline and size limit.

    A partial of the class rather than a subclass made per call: uvicorn pickles its
    ``Config``, this with it, into each ``--workers`` process, and a class made at run
    time cannot be pickled.
    """
    return functools.partial(
        HeaderTimeoutProtocol, header_timeout=config.header_timeout, max_header_size=config.max_header_size
    )
