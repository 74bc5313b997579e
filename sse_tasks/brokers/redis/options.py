"""The broker's options in its URL's query string (``redis://host/0?lease=5``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

URL_OPTIONS = ("history", "retention", "max_tasks", "lease", "outage_grace", "prefix", "max_connections")


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take this broker's options out of the URL's query; redis-py gets the rest."""
    head, _, query = url.split("#", 1)[0].partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    ours = {name: value for name, value in pairs if name in URL_OPTIONS}
    rest = urlencode([(name, value) for name, value in pairs if name not in URL_OPTIONS])
    # Not urlunsplit: it writes "unix:///path" back as "unix:/path", which redis-py refuses.
    return (f"{head}?{rest}" if rest else head), ours


def option(given: Any, query: dict[str, str], name: str, default: Any, kind: type) -> Any:
    if given is not None:
        return kind(given)
    if name in query:
        try:
            return kind(query[name])
        except ValueError:
            message = f"broker URL option {name}={query[name]!r} is not a valid {kind.__name__}"
            raise ValueError(message) from None
    return default
