"""CORS for the hub's API: exact origins only, credentials only for them.

Starlette's ``CORSMiddleware`` answers ``Access-Control-Allow-Credentials: true`` to
any origin once credentials are on, and with ``allow_origins=["*"]`` plus credentials
it echoes *every* origin back; this one refuses that configuration. It only edits
the response's start message, so SSE streams pass through unbuffered.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = ("GET", "POST", "DELETE")
_HEADERS = ("authorization", "content-type", "last-event-id")
_EXPOSE = ("Location", "Retry-After")


def _check_origin(origin: str) -> str:
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or "*" in parts.netloc
        or origin != f"{parts.scheme}://{parts.netloc}"
    ):
        raise ValueError(f"CORS origin {origin!r} must be exactly scheme://host[:port] (no wildcards)")
    return origin


def check_cors(origins: Iterable[str], credentials: bool) -> frozenset[str]:
    """The origins, validated; raises ``ValueError`` (malformed, or ``"*"`` with credentials)."""
    checked = frozenset(_check_origin(o) for o in origins)
    if "*" in checked and credentials:
        raise ValueError("CORS: '*' cannot be combined with credentials; list the exact origins")
    return checked


class CORSMiddleware:
    """Allow cross-origin browser access from ``origins`` (exact ``scheme://host[:port]``).

    Args:
        app: the ASGI app to wrap.
        origins: allowed origins; ``"*"`` allows any origin, but only without credentials.
        credentials: let allowed origins send cookies/``Authorization`` (and read answers).
        max_age: seconds a browser may cache a preflight answer.

    Raises ``ValueError`` for a malformed origin or ``"*"`` with ``credentials``.
    """

    def __init__(
        self, app: ASGIApp, origins: Iterable[str], *, credentials: bool = False, max_age: int = 600
    ) -> None:
        self.app = app
        self.origins = check_cors(origins, credentials)
        self.any_origin = "*" in self.origins
        self.credentials = credentials
        self.max_age = max_age

    def allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers.add_vary_header("Origin")
                if origin is not None and self.allowed(origin):
                    self._allow(response_headers, origin)
                    response_headers["Access-Control-Expose-Headers"] = ", ".join(_EXPOSE)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _allow(self, headers: MutableHeaders, origin: str) -> None:
        if self.credentials:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        else:
            headers["Access-Control-Allow-Origin"] = "*" if self.any_origin else origin

    async def _preflight(self, origin: str, request: Headers, send: Send) -> None:
        method = request["access-control-request-method"]
        asked = [h.strip().lower() for h in request.get("access-control-request-headers", "").split(",")]
        ok = self.allowed(origin) and method in _METHODS and all(h in _HEADERS for h in asked if h)
        headers = MutableHeaders()
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        if ok:
            self._allow(headers, origin)
            headers["Access-Control-Allow-Methods"] = ", ".join(_METHODS)
            headers["Access-Control-Allow-Headers"] = ", ".join(_HEADERS)
            headers["Access-Control-Max-Age"] = str(self.max_age)
        status = 204 if ok else 403
        await send({"type": "http.response.start", "status": status, "headers": headers.raw})
        await send({"type": "http.response.body", "body": b""})
