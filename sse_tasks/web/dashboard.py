"""``GET <mount>/dashboard``: the live operations page (served with ``dashboard=True``).

The page is static HTML, CSS and an ES module (``static/dashboard.*``) that follows the
hub's own ``GET /tasks`` and ``/events`` through the browser module; the page carries no
data itself. It opens only for a caller the authorization hook answers ``True`` for
``Access(action="operate")`` (without a hook or tokens: for anyone, since serving it was
asked for explicitly); what it then shows is what that caller may ``list`` and ``follow``.
Each answer carries a strict Content-Security-Policy: only the page's own inline script
and style (by nonce) and scripts and connections to the hub itself.
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import Response

from .._core.errors import Forbidden

if TYPE_CHECKING:
    from starlette.requests import Request

    from .endpoints import Web

_STATIC = Path(__file__).parent / "static"


@cache
def _parts() -> tuple[str, str, str]:
    """The page's template, style and script, read once."""
    return tuple(  # type: ignore[return-value]
        (_STATIC / name).read_text(encoding="utf-8")
        for name in ("dashboard.html", "dashboard.css", "dashboard.js")
    )


def dashboard_html(nonce: str) -> str:
    """The page, its style and script inlined under ``nonce``."""
    template, style, script = _parts()
    return template.replace("{{style}}", style).replace("{{script}}", script).replace("{{nonce}}", nonce)


def content_security_policy(nonce: str) -> str:
    """The page's policy: nothing but its own nonce'd code and the hub's origin."""
    return (
        f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


async def dashboard_page(web: Web, request: Request) -> Response:
    """The operations page: 403 unless the hook answers ``True`` for ``operate``."""
    gate = web.gate
    if not gate.open and await gate.decide("operate", request) is not True:
        web.runner.stats.denied += 1
        raise Forbidden("not allowed to operate this hub")
    nonce = secrets.token_urlsafe(16)
    return Response(
        dashboard_html(nonce),
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
