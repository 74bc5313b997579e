"""The broker's options in its URL's query string (``redis://host/0?lease=5``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio
from redis.exceptions import RedisError

URL_OPTIONS = (
    "history",
    "retention",
    "max_tasks",
    "lease",
    "outage_grace",
    "prefix",
    "max_connections",
    "partitions",
)


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


def check_settings(url: str, extra: dict[str, Any], *, asyncio: bool, given: str) -> None:
    """Make, never open, a connection as a redis-py pool would from ``url`` and ``extra``
    (``from_url``'s arguments): redis-py checks some settings only there (``ssl_cert_reqs``,
    ``protocol``, a setting ``redis://`` does not take). Raises ``ValueError`` naming it;
    ``given``: the URL as the user gave it."""
    pool_class = redis.asyncio.ConnectionPool if asyncio else redis.ConnectionPool
    pool = pool_class.from_url(url, **extra)
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:  # an unexpected keyword argument: a setting of another scheme
        name = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if name is None:
            raise ValueError(str(exc)) from None
        raise ValueError(
            f"{name.group(1)!r} is not a setting of a {urlsplit(given).scheme}:// connection"
        ) from None
    except RedisError as exc:
        raise ValueError(str(exc)) from None
