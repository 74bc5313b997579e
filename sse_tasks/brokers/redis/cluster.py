"""``redis+cluster://``: the broker on a Redis Cluster.

Every key of one broker carries the hash tag ``{prefix}``, so all of them live in one
slot and every script, pipeline and ``XREAD`` runs on the node that holds it, exactly
as on a single Redis. A connection finds that node when it connects: it asks the nodes
of the URL in turn for ``CLUSTER SLOTS``. A reply that says the slot is elsewhere
(``MOVED``: a failover or resharding moved it; ``ASK``: it is being moved) or that the cluster cannot answer
(``CLUSTERDOWN``, ``TRYAGAIN``) closes the connection and counts as Redis being
unreachable, so the next connection finds the node again.

``redis+cluster://[[user]:password@]host:port[,host:port…][/0][?options]`` (and
``rediss+cluster://`` for TLS): the nodes to start from, then the same options and
redis-py settings as ``redis://``. A cluster has one database, 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.retry import Retry

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

#: Replies that mean this connection no longer reaches the node holding the slot (``ASK``:
#: the slot is moving; ``MOVED`` is an ``AskError`` too).
_ELSEWHERE = (AskError, ClusterDownError, TryAgainError)
#: The same replies as redis-py before 6 raises them outside its cluster client: a plain
#: ``ResponseError``, told apart by the reply's first word.
_ELSEWHERE_WORDS = frozenset({"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"})
#: Seconds a probe waits for a node's ``CLUSTER SLOTS`` (a connection's own timeout may be long).
_PROBE_TIMEOUT = 2.0


def _is_elsewhere(exc: BaseException) -> bool:
    """A reply that says the slot is served elsewhere, or that the cluster cannot answer."""
    if isinstance(exc, _ELSEWHERE):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in _ELSEWHERE_WORDS


Node = tuple[str, int]


def _address(node: Node) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClusterURL:
    """A ``redis+cluster://`` URL: its startup nodes and the ``redis://`` URL (of the
    first node) that carries the credentials, TLS and redis-py settings."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = SCHEMES.get(parts.scheme)
        if scheme is None:
            raise ValueError(f"not a Redis Cluster URL: {url!r}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        self.nodes: list[Node] = []
        for host_port in hosts.split(","):
            host, colon, port = host_port.strip().rpartition(":")
            if not colon or not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(
                    f"Redis Cluster URL {url!r}: each node is host:port (a port from 1 to 65535), "
                    f"not {host_port!r}"
                )
            self.nodes.append((host.strip("[]"), int(port)))
        databases = parse_qs(parts.query).get("db", [])
        if parts.path.strip("/") not in ("", "0") or any(db != "0" for db in databases):
            raise ValueError(f"Redis Cluster URL {url!r}: a cluster has only database 0")
        first = _address(self.nodes[0])
        netloc = f"{credentials}@{first}" if credentials else first
        self.url = urlunsplit((scheme, netloc, "/0", parts.query, ""))

    @property
    def where(self) -> str:
        return ",".join(_address(node) for node in self.nodes)


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def hash_tagged(prefix: str) -> str:
    """``prefix`` as a hash tag: every key under it hashes to one slot. A prefix with a tag
    of its own (``{app}:tasks``) keeps it; an empty ``{}`` is no tag to Redis. Raises
    ``ValueError`` for a prefix that makes no tag (empty, or starting with ``}``): its
    keys would spread over the cluster's slots, which the broker's scripts cannot reach."""
    tagged = prefix if _tag(prefix) else "{" + prefix + "}"
    if not _tag(tagged):
        raise ValueError(
            f"prefix {prefix!r} makes no hash tag on a Redis Cluster (every key of the broker must "
            "hash to one slot): use a prefix that is not empty and does not start with '}'"
        )
    return tagged


def _tag(key: str) -> str:
    """The hash tag Redis finds in ``key``: between its first ``{`` and the next ``}``."""
    start = key.find("{")
    if start < 0:
        return ""
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else ""


def _owner(slots: Any, slot: int, asked: Node) -> Node | None:
    """The master serving ``slot`` in a ``CLUSTER SLOTS`` reply (from node ``asked``)."""
    for start, end, master, *_ in slots:
        if int(start) <= slot <= int(end):
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            return (host or asked[0], int(master[1]))
    return None


class _SlotFinder:
    """What a connection class of either kind keeps to find the slot's master: the
    startup nodes, the slot, and how to make a plain connection to a node (a probe)."""

    def _remember(
        self, base: type[Any], startup_nodes: Sequence[Node], slot: int, kwargs: Any, no_retry: Any
    ) -> None:
        self._base, self._startup, self._slot, self._kwargs = base, list(startup_nodes), slot, kwargs
        self._no_retry = no_retry
        self._errors: list[str] = []

    def _probes(self) -> Iterator[tuple[Node, Any]]:
        self._errors = []
        timeout = min(self._kwargs.get("socket_timeout") or _PROBE_TIMEOUT, _PROBE_TIMEOUT)
        settings = {**self._kwargs, "socket_timeout": timeout, "retry": self._no_retry}
        for node in self._startup:
            yield node, self._base(**{**settings, "host": node[0], "port": node[1]})

    def _failed(self, node: Node, exc: BaseException) -> None:
        self._errors.append(f"{node[0]}:{node[1]}: {exc}")

    def _no_node(self) -> redis.exceptions.ConnectionError:
        found = "; ".join(self._errors) or "no node serves the slot"
        message = f"no Redis Cluster node answered for the broker's slot ({found})"
        return redis.exceptions.ConnectionError(message)


#: What a probe's failure or a reply from elsewhere may raise.
_PROBE_ERRORS = (redis.exceptions.RedisError, OSError)


def _elsewhere(exc: BaseException) -> redis.exceptions.ConnectionError:
    return redis.exceptions.ConnectionError(f"Redis Cluster: {type(exc).__name__} {exc}")


def _resolving(base: type[Any]) -> type[Any]:
    """``base`` (a blocking redis-py connection class) connecting to the slot's master."""

    class Resolving(base, _SlotFinder):  # type: ignore[misc]
        def __init__(self, *, startup_nodes: Sequence[Node], slot: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._remember(base, startup_nodes, slot, kwargs, Retry(NoBackoff(), 0))

        def _connect(self) -> Any:
            for node, probe in self._probes():
                try:
                    probe.connect()
                    probe.send_command("CLUSTER", "SLOTS")
                    owner = _owner(probe.read_response(), self._slot, node)
                except _PROBE_ERRORS as exc:
                    self._failed(node, exc)
                    continue
                finally:
                    probe.disconnect()
                if owner is not None:
                    self.host, self.port = owner
                    return super()._connect()
            raise self._no_node()

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except ResponseError as exc:
                if not _is_elsewhere(exc):
                    raise
                self.disconnect()
                raise _elsewhere(exc) from exc

    Resolving.__name__ = Resolving.__qualname__ = f"Cluster{base.__name__}"
    return Resolving


def _resolving_async(base: type[Any]) -> type[Any]:
    """The same for an asyncio redis-py connection class."""

    class Resolving(base, _SlotFinder):  # type: ignore[misc]
        def __init__(self, *, startup_nodes: Sequence[Node], slot: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._remember(base, startup_nodes, slot, kwargs, AsyncRetry(NoBackoff(), 0))

        async def _connect(self) -> Any:
            for node, probe in self._probes():
                try:
                    await probe.connect()
                    await probe.send_command("CLUSTER", "SLOTS")
                    owner = _owner(await probe.read_response(), self._slot, node)
                except _PROBE_ERRORS as exc:
                    self._failed(node, exc)
                    continue
                finally:
                    await probe.disconnect()
                if owner is not None:
                    self.host, self.port = owner
                    return await super()._connect()
            raise self._no_node()

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().read_response(*args, **kwargs)
            except ResponseError as exc:
                if not _is_elsewhere(exc):
                    raise
                await self.disconnect()
                raise _elsewhere(exc) from exc

    Resolving.__name__ = Resolving.__qualname__ = f"Cluster{base.__name__}"
    return Resolving


_SYNC = {
    "redis": _resolving(redis.connection.Connection),
    "rediss": _resolving(redis.connection.SSLConnection),
}
_ASYNC = {
    "redis": _resolving_async(redis.asyncio.connection.Connection),
    "rediss": _resolving_async(redis.asyncio.connection.SSLConnection),
}


def pool_arguments(url: str, key_prefix: str, *, asyncio: bool) -> tuple[str, dict[str, Any]]:
    """What ``ConnectionPool.from_url`` takes for ``url``: itself for one Redis; for a
    cluster, a ``redis://`` URL and a connection class that finds the node holding the
    slot of ``key_prefix`` (a hash tag) on every connect."""
    if not is_cluster(url):
        return url, {}
    cluster = ClusterURL(url)
    classes = _ASYNC if asyncio else _SYNC
    parts = urlsplit(cluster.url)
    connection_class = classes[parts.scheme]
    slot = key_slot(key_prefix.encode())
    # The class makes its TLS connections itself: given rediss://, redis-py's asyncio
    # pool before 8 would put its own SSLConnection in the class's place.
    plain = urlunsplit(("redis", *parts[1:]))
    return plain, {"connection_class": connection_class, "startup_nodes": cluster.nodes, "slot": slot}
