"""Serving behind a reverse proxy that strips a path prefix (``location /jobs/``).

The prefix is the ASGI ``root_path``: uvicorn sets it from ``--root-path``, a mount adds
its own path to it, and the hub builds its links from it. :class:`ForwardedPrefix`
takes it per request from a trusted proxy's ``X-Forwarded-Prefix`` instead.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("sse_tasks")


def mount_path(request: Request) -> str:
    """Where the hub is mounted for this request: its ``root_path``, without a trailing
    slash (``""`` at the root); the links and pages the hub writes start with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


#: Longest prefix accepted, in characters.
MAX_PREFIX = 256

# RFC 3986 path characters, less "%" (a prefix is used both as a decoded ASGI path and
# as a URL) and "," (proxies join repeated headers with it).
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+;=:@-]+")
_HEADER = b"x-forwarded-prefix"


def check_prefix(value: str) -> str:
    """``value`` as a root path: ``""`` (for ``""`` or ``/``) or ``/a/b`` (a trailing ``/`` dropped).

    Raises ``ValueError`` saying why it cannot be one: it must start with ``/``, hold
    no ``..``, no empty segment (``//``), nothing but letters, digits and
    ``-._~!$&'()*+;=:@`` between slashes, and at most :data:`MAX_PREFIX` characters.
    """
    if value in ("", "/"):
        return ""
    if len(value) > MAX_PREFIX:
        raise ValueError(f"a path prefix is at most {MAX_PREFIX} characters")
    if not value.startswith("/"):
        raise ValueError(f"a path prefix starts with '/': {value!r}")
    if ".." in value:
        raise ValueError(f"a path prefix holds no '..': {value!r}")
    prefix = value[:-1] if value.endswith("/") else value
    for segment in prefix[1:].split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"a path prefix is /segment/segment… of letters, digits and -._~!$&'()*+;=:@ "
                f"(no empty segment, space or control character): {value!r}"
            )
    return prefix


class TrustedProxies:
    """The peers whose forwarded headers are believed, as uvicorn's ``--forwarded-allow-ips``
    names them: comma-separated IP addresses and networks (``10.0.0.0/8``), or ``*``.

    Raises ``ValueError`` for an entry that is neither.
    """

    def __init__(self, value: str | Iterable[str]) -> None:
        items = value.split(",") if isinstance(value, str) else list(value)
        self.everyone = False
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in items:
            item = raw.strip()
            if item == "*":
                self.everyone = True
            elif item:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address, a network or '*'") from None
        self.networks = tuple(networks)

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def forwarded_prefix(scope: Scope) -> str | None:
    """The request's ``X-Forwarded-Prefix``, checked; None when absent, repeated or invalid."""
    values = [value for name, value in scope["headers"] if name == _HEADER]
    if len(values) != 1:
        return None
    try:
        return check_prefix(values[0].decode("latin-1"))
    except ValueError as exc:
        logger.debug("ignored X-Forwarded-Prefix: %s", exc)
        return None


def with_root_path(scope: Scope, root_path: str) -> Scope:
    """A copy of ``scope`` served under ``root_path`` in place of its own ``root_path``.

    ``path`` and ``raw_path`` keep the ASGI form (the root path included), so routes
    still match the path the proxy sent.
    """
    old = scope.get("root_path", "")
    path: str = scope["path"]
    if old and (path == old or path.startswith(old + "/")):
        path = path[len(old) :]
    changed = {**scope, "root_path": root_path, "path": root_path + path}
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        raw_old = old.encode("latin-1")
        if raw_old and (raw == raw_old or raw.startswith(raw_old + b"/")):
            raw = raw[len(raw_old) :]
        changed["raw_path"] = root_path.encode("ascii") + raw
    return changed


class ForwardedPrefix:
    """ASGI middleware: a trusted proxy's ``X-Forwarded-Prefix`` becomes the request's
    ``root_path`` (in place of ``--root-path``); from any other peer it is ignored, and
    so is an invalid one (see :func:`check_prefix`).

    It must see the connecting peer, so it wraps uvicorn's proxy-headers middleware,
    which replaces the peer with the ``X-Forwarded-For`` client.
    """

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client is not None and client[0] in self.trusted:
                prefix = forwarded_prefix(scope)
                if prefix is not None:
                    scope = with_root_path(scope, prefix)
        await self.app(scope, receive, send)
