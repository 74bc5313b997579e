"""Commands sent straight over redis-py connections: the worker side's writers' path.

A worker hook makes one or two round trips per task, and redis-py's client spends more
CPU on each than the round trip itself (its pool checks every connection it lends with a
non-blocking read, wraps each command in retries and observability, runs a response
callback): about 90 µs for an ``HMGET`` against 40 µs sent and read on the same
connection, on a 2-CPU machine. A :class:`Wire` (blocking) or :class:`AsyncWire` keeps a
few connections that redis-py makes, so TLS, ACL, RESP and a cluster's slot finder work
as for any client, writes each batch of commands in one ``send`` and reads the raw
replies: an error reply is its exception, in its place. A connection that fails is
closed and never lent again; one that had waited idle and turns out closed (Redis
restarted) is replaced, and the batch sent again, once: every write a writer sends
carries a token that makes it idempotent.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

_pack_hiredis: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_hiredis
except ImportError:  # pragma: no cover - the extras install hiredis
    _pack_hiredis = None

#: One command: its words and arguments (``str``, ``bytes``, ``int`` or ``float``).
Command = Sequence[Any]


def _pack(connection: Any, commands: Sequence[Command]) -> list[bytes]:
    """The bytes of ``commands``, for one ``send``: hiredis packs each in one call; redis-py
    packs what hiredis does not take, and everything without it."""
    if _pack_hiredis is not None:
        try:
            return [b"".join(_pack_hiredis(tuple(command)) for command in commands)]
        except TypeError:
            pass
    return list(connection.pack_commands([tuple(command) for command in commands]))


def _settings(url: str, extra: dict[str, Any], client_name: str) -> dict[str, Any]:
    return {**extra, "socket_timeout": 5.0, "socket_connect_timeout": 2.0, "client_name": client_name}


class Wire:
    """Blocking: commands over connections of ``url`` (``extra``: more ``from_url``
    settings, such as a cluster's connection class), named ``client_name``. Safe to share
    between threads (one connection per concurrent batch); after a ``fork`` the child
    opens its own."""

    def __init__(self, url: str, extra: dict[str, Any], client_name: str) -> None:
        self._pool = redis.ConnectionPool.from_url(url, **_settings(url, extra, client_name))
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def send(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands``, in order, sent in one round trip."""
        for attempt in (1, 2):
            connection, waited = self._take()
            try:
                connection.send_packed_command(_pack(connection, commands), check_health=False)
                replies = [_read(connection) for _ in commands]
            except RedisConnectionError:
                connection.disconnect()
                if waited and attempt == 1:
                    continue
                raise
            except BaseException:
                connection.disconnect()
                raise
            with self._lock:
                self._idle.append(connection)
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self) -> tuple[Any, bool]:
        """A connection, and whether it had waited idle (made now: False)."""
        with self._lock:
            if self._pid != os.getpid():
                # The parent's sockets: dropped, not closed (closing would not reach the
                # parent's connection, but a shutdown would).
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._pool.make_connection(), False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


def _read(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as exc:
        return exc


class AsyncWire:
    """The same on an event loop (its connections belong to the loop that opened them), at
    most ``limit`` of them (None: as many as batches in flight)."""

    def __init__(
        self, url: str, extra: dict[str, Any], client_name: str, *, limit: int | None = None
    ) -> None:
        self._pool = redis.asyncio.ConnectionPool.from_url(url, **_settings(url, extra, client_name))
        self._idle: list[Any] = []
        # asyncio's, not anyio's: acquiring a free one does not yield to the loop.
        self._limit = None if limit is None else asyncio.Semaphore(limit)

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands``, in order, sent in one round trip."""
        if self._limit is None:
            return await self._send(commands)
        async with self._limit:
            return await self._send(commands)

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        for attempt in (1, 2):
            waited = bool(self._idle)
            connection = self._idle.pop() if waited else self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.send_packed_command(_pack(connection, commands), check_health=False)
                replies = [await _read_async(connection) for _ in commands]
            except RedisConnectionError:
                await _drop(connection)
                if waited and attempt == 1:
                    continue
                raise
            except BaseException:
                await _drop(connection)
                raise
            self._idle.append(connection)
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _drop(connection)


async def _read_async(connection: Any) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return exc


async def _drop(connection: Any) -> None:
    """Close ``connection`` (cancelled or not: its state is unknown, it is never reused)."""
    with anyio.CancelScope(shield=True):
        await connection.disconnect(nowait=True)
