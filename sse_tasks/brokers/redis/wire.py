"""Commands sent straight over redis-py connections: the path of the worker side's writers
and of the broker's write scripts.

A worker hook makes one or two round trips per task, and redis-py's client spends more
CPU on each than the round trip itself (its pool checks every connection it lends with a
non-blocking read, wraps each command in retries and observability, runs a response
callback): about 90 µs for an ``HMGET`` against 40 µs sent and read on the same
connection, on a 2-CPU machine. A :class:`Wire` (blocking) or :class:`AsyncWire` keeps a
few connections that redis-py makes, so TLS, ACL, RESP and a cluster's slot finder work
as for any client, writes each batch of commands in one ``send`` and reads the raw
replies: an error reply is its exception, in its place. A connection that fails is
closed and never lent again; when one that had waited idle turns out closed (Redis
restarted, a cluster's slot moved), every idle one is closed and the batch is sent
again, once, on a new connection: every write carries a token that makes it idempotent.
A batch that runs scripts names their sources: if Redis lost them (restarted, flushed:
it answers NOSCRIPT), they are loaded and the batch is sent again.

A blocking :class:`Wire` can also *post* a batch: send it and go on without waiting for
its replies (a worker's last write of a task, whose answer it never uses). The
connection reads them before it is used again, or when :meth:`Wire.settle` is called; a
batch whose connection failed before it answered is sent again then (its tokens make
that safe), and one that still cannot be sent waits for the next settle, until its
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import mmap
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import redis
import redis.asyncio
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .link import UNREACHABLE, not_serving

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - redis-py requires async-timeout before 3.11.3
    from async_timeout import timeout as _timeout

_pack_hiredis: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_hiredis
except ImportError:  # pragma: no cover - the extras install hiredis
    _pack_hiredis = None

#: One command: its words and arguments (``str``, ``bytes``, ``int`` or ``float``).
Command = Sequence[Any]
T = TypeVar("T")
#: A posted batch: its commands and the sources of the scripts they run.
Batch = tuple[Sequence[Command], Sequence[str]]

logger = logging.getLogger("sse_tasks.redis")


def deadline(seconds: float) -> contextlib.AbstractAsyncContextManager[Any]:
    """A deadline for what the block awaits: then it raises ``TimeoutError``. Cheaper than
    ``asyncio.wait_for`` (a task per call) or an anyio cancel scope."""
    return _timeout(seconds)


def _pack(connection: Any, commands: Sequence[Command]) -> list[bytes]:
    """The bytes of ``commands``, for one ``send``: hiredis packs each in one call; redis-py
    packs what hiredis does not take, and everything without it."""
    if _pack_hiredis is not None:
        try:
            return [b"".join(_pack_hiredis(tuple(command)) for command in commands)]
        except TypeError:
            pass
    return list(connection.pack_commands([tuple(command) for command in commands]))


def _refused(replies: list[Any]) -> bool:
    """True if Redis answered one of ``replies`` that it cannot serve now (out of memory,
    read-only, busy: :data:`~.link.UNREACHABLE`): the batch is to be sent again."""
    return any(isinstance(reply, UNREACHABLE) for reply in replies)


def _unrefused(replies: list[Any]) -> list[Any]:
    """``replies``; raises the first that says Redis cannot serve now (see :func:`_refused`)."""
    for reply in replies:
        if isinstance(reply, UNREACHABLE):
            raise reply
    return replies


def _lost(replies: list[Any], scripts: Sequence[str]) -> bool:
    """True if ``replies`` say Redis lost one of ``scripts`` (it answered NOSCRIPT)."""
    return bool(scripts) and any(isinstance(reply, NoScriptError) for reply in replies)


def _loads(scripts: Sequence[str]) -> list[Command]:
    return [("SCRIPT", "LOAD", source) for source in scripts]


def _no_setinfo() -> dict[str, Any]:
    """The settings that keep redis-py from sending ``CLIENT SETINFO`` on every connect.

    Its library name and version cost a round trip and, for the version, a read of the
    package's metadata on the disk: in a process that forks a child per task (RQ's work
    horse, a pool's child) each child opens its own connection, and that was most of the
    hook's cost per task. The connection keeps its client name, which is what tells it apart.
    """
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    if "driver_info" in parameters:  # newer redis-py: None turns SETINFO off
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


#: Connection settings of every connection the broker and the workers' writers open.
NO_SETINFO = _no_setinfo()


def _settings(
    url: str, extra: dict[str, Any], client_name: str, timeout: float | None = 5.0
) -> dict[str, Any]:
    return {
        **extra,
        **NO_SETINFO,
        "socket_timeout": timeout,
        "socket_connect_timeout": 2.0,
        "client_name": client_name,
    }


class Wire:
    """Blocking: commands over connections of ``url`` (``extra``: more ``from_url``
    settings, such as a cluster's connection class), named ``client_name``. Safe to share
    between threads (one connection per concurrent batch); after a ``fork`` the child
    opens its own, but for one the parent lent it (:meth:`lend`, :meth:`adopt`)."""

    def __init__(self, url: str, extra: dict[str, Any], client_name: str) -> None:
        # The pool only parses the URL: its connection class and settings make ours.
        pool = redis.ConnectionPool.from_url(url, **_settings(url, extra, client_name))
        self._make = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._tls = issubclass(pool.connection_class, redis.connection.SSLConnection)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._lent: Any = None  # the parent's connection lent to the next child
        self._offered: Any = None  # in a child: the connection its parent lent, not adopted
        self._borrowed: Any = None  # in the child that adopted it: the same connection
        # One byte both share: 1 while the connection is between round trips in the child.
        self._clean: mmap.mmap | None = None
        # An idle connection -> the deadline and the batch it has not answered yet (post).
        self._owed: dict[Any, tuple[float, Batch]] = {}
        self._unsent: list[tuple[float, Batch]] = []  # posted, unanswered: sent again

    def lend(self) -> bool:
        """Before a ``fork``: offer the child one of this process's connections (opened now
        if need be), which it takes with :meth:`adopt`, sparing it a connect per child (a
        forking worker runs each job in a new child). The parent leaves that connection
        alone until :meth:`reclaim`, which it must call once the child has ended, before it
        forks again. True if one is lent; never a TLS connection (its session state stays
        in the process that used it last)."""
        if self._lent is not None:
            raise RuntimeError("a connection is lent already: reclaim it first")
        if self._tls:
            return False
        self._forked()
        with self._lock:
            connection = self._idle.pop() if self._idle else None
            owed = self._owed.pop(connection, None)
        if connection is None:
            connection = self._make()
        elif owed is not None:
            connection = self._settle(connection, owed)
        try:
            connection.connect()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            connection.disconnect()
            return False  # the child opens its own
        if self._clean is None:
            self._clean = mmap.mmap(-1, 1)
        self._clean[0] = 1
        self._lent = connection
        return True

    def adopt(self) -> None:
        """In the child the parent forked after :meth:`lend`, before it starts a thread:
        the lent connection is this process's. Any other child (one the child forks, or
        one forked by a parent that lent but never forks) leaves it alone."""
        self._forked()
        offered, self._offered = self._offered, None
        if offered is not None:
            self._borrowed = offered
            with self._lock:
                self._idle.append(offered)

    def reclaim(self, *, child_alive: bool = False) -> None:
        """The child has ended: the lent connection is this process's again if the child
        left it between round trips (or never used it); else it is closed. ``child_alive``:
        the parent stopped waiting for a child that may still run: this process's copy
        is closed without ending the connection the child may be using."""
        connection, self._lent = self._lent, None
        if connection is None:
            return
        if child_alive:
            # redis-py shuts a socket down (ending it for every process) only in the
            # process that made it: as another, it just closes this descriptor.
            connection.pid = None
            connection.disconnect()
        elif self._clean is not None and self._clean[0] == 1:
            self._give(connection)
        else:
            connection.disconnect()

    def send(self, commands: Sequence[Command], scripts: Sequence[str] = ()) -> list[Any]:
        """The replies of ``commands``, in order, sent in one round trip; ``scripts``: the
        sources of the scripts they run (loaded, and the batch sent again, if Redis lost them)."""
        replies = self._send(commands)
        if _lost(replies, scripts):
            self._send(_loads(scripts))
            replies = self._send(commands)
        return replies

    def post(
        self, commands: Sequence[Command], scripts: Sequence[str] = (), *, retry_for: float = 0.0
    ) -> None:
        """Send ``commands`` in one write and return without waiting for their replies,
        which the connection reads before its next use. Raises what :meth:`send` raises
        if they cannot be sent now; if they were sent but their connection fails before
        it answers, they are sent again at the next :meth:`settle` (or use of the wire),
        for up to ``retry_for`` seconds. Errors Redis answers are logged. A connection
        a parent process lent (:meth:`adopt`) waits for the replies instead: it must be
        left between round trips."""
        connection, waited = self._take()
        if connection is self._borrowed:
            self._give(connection)
            self.send(commands, scripts)
            return
        while True:
            try:
                connection.send_packed_command(_pack(connection, commands), check_health=False)
            except RedisConnectionError:
                connection.disconnect()
                if not waited:
                    raise
                self._drop_idle()  # see _send
                connection, waited = self._make(), False
                continue
            except ResponseError as exc:  # the handshake's: a command's reply is returned
                connection.disconnect()
                raise not_serving(exc) from None
            except BaseException:
                connection.disconnect()
                raise
            with self._lock:
                self._owed[connection] = (time.monotonic() + retry_for, (commands, scripts))
            self._give(connection)
            return

    def settle(self) -> None:
        """Read the replies idle connections owe for posted batches (see :meth:`post`),
        then send again the batches a failed connection left unanswered. Raises what
        :meth:`send` raises while one cannot be sent (it is kept until its deadline)."""
        self._forked()
        with self._lock:
            owing = {
                connection: self._owed.pop(connection)
                for connection in self._idle
                if connection in self._owed
            }
            self._idle = [connection for connection in self._idle if connection not in owing]
        for connection, owed in owing.items():
            self._give(self._settle(connection, owed))
        with self._lock:
            unsent, self._unsent = self._unsent, []
        for index, (_, (commands, scripts)) in enumerate(unsent):
            try:
                _log_errors(_unrefused(self.send(commands, scripts)))
            except UNREACHABLE:
                with self._lock:
                    self._unsent[:0] = _still_due(unsent[index:])
                raise

    def _settle(self, connection: Any, owed: tuple[float, Batch]) -> Any:
        """Read the replies ``connection`` owes; the connection to use next (a new one if
        it failed: the batch waits to be sent again, by :meth:`settle`)."""
        commands, scripts = owed[1]
        try:
            replies = [_read(connection) for _ in commands]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            connection.disconnect()
            with self._lock:
                self._unsent.append(owed)
            return self._make()
        except BaseException:  # interrupted: whether it was answered is unknown
            connection.disconnect()
            with self._lock:
                self._unsent.append(owed)
            raise
        if _lost(replies, scripts) or _refused(replies):
            with self._lock:
                self._unsent.append(owed)  # sent again (the scripts loaded first if Redis lost them)
        else:
            _log_errors(replies)
        return connection

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        connection, waited = self._take()
        while True:
            try:
                connection.send_packed_command(_pack(connection, commands), check_health=False)
                replies = [_read(connection) for _ in commands]
            except RedisConnectionError:
                connection.disconnect()
                if not waited:
                    raise
                # One idle connection closed (Redis restarted, or the cluster's slot
                # moved): so are the others. Once more, on a new one.
                self._drop_idle()
                connection, waited = self._make(), False
                continue
            except ResponseError as exc:  # the handshake's: a command's reply is returned
                connection.disconnect()
                raise not_serving(exc) from None
            except BaseException:
                connection.disconnect()
                raise
            self._give(connection)
            return replies

    def _forked(self) -> None:
        """In a child after a ``fork``: the parent's sockets are dropped, not closed (a
        close would not reach the parent's connection, but a shutdown would), the one it
        lent is kept aside for :meth:`adopt`, and the lock is new (another thread of the
        parent may have held it as it forked)."""
        if self._pid != os.getpid():
            self._lock, self._idle, self._pid = threading.Lock(), [], os.getpid()
            self._offered, self._lent, self._borrowed = self._lent, None, None
            self._owed, self._unsent = {}, []  # the parent's to answer

    def _take(self) -> tuple[Any, bool]:
        """A connection, and whether it had waited idle (made now: False)."""
        self._forked()
        with self._lock:
            self._closed = False
            if not self._idle:
                return self._make(), False
            connection = self._idle.pop()
            if connection is self._borrowed and self._clean is not None:
                self._clean[0] = 0  # a reply may be unread until it comes back
            owed = self._owed.pop(connection, None)
        if owed is None:
            return connection, True
        settled = self._settle(connection, owed)
        return settled, settled is connection

    def _give(self, connection: Any) -> None:
        self._forked()
        if connection is self._borrowed and self._clean is not None:
            self._clean[0] = 1
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.disconnect()  # closed while it was out

    def _drop_idle(self) -> None:
        self._forked()
        with self._lock:
            idle, self._idle = self._idle, []
            # Posted batches they never answered are sent again (their tokens make it safe).
            self._unsent.extend(self._owed.pop(connection) for connection in idle if connection in self._owed)
        for connection in idle:
            connection.disconnect()

    def close(self) -> None:
        """Close the connections (one in use is closed as it comes back); a later
        :meth:`send` opens new ones."""
        self._forked()
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            self.settle()  # what was posted is answered (or sent again) before it closes
        with self._lock:
            self._closed = True
        self._drop_idle()


def _still_due(unsent: list[tuple[float, Batch]]) -> list[tuple[float, Batch]]:
    """The posted batches of ``unsent`` still to send again: those past their deadline are
    dropped (logged)."""
    now = time.monotonic()
    kept = [item for item in unsent if item[0] > now]
    if len(kept) < len(unsent):
        logger.error(
            "%d posted Redis writes dropped: Redis unreachable past their deadline", len(unsent) - len(kept)
        )
    return kept


def _log_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            logger.error("a posted Redis command failed: %s", reply)


def _read(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as exc:
        return not_serving(exc)


class AsyncWire:
    """The same on an event loop (its connections belong to the loop that opened them), at
    most ``limit`` of them (None: as many as batches in flight); a batch that waits
    ``timeout`` seconds for one raises ``ConnectionError``, one that is not answered
    within ``reply_timeout`` seconds ``TimeoutError`` (both ``redis.exceptions``')."""

    def __init__(
        self,
        url: str,
        extra: dict[str, Any],
        client_name: str,
        *,
        limit: int | None = None,
        timeout: float = 5.0,
        reply_timeout: float = 5.0,
    ) -> None:
        # No socket timeout on the connections: redis-py would wrap every send in
        # ``asyncio.wait_for`` (a task of its own) and every read in a timeout. One deadline
        # covers a whole batch instead.
        pool = redis.asyncio.ConnectionPool.from_url(url, **_settings(url, extra, client_name, None))
        self._make = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[Any] = []
        self._closed = False
        # asyncio's, not anyio's: acquiring a free one does not yield to the loop.
        self._limit = None if limit is None else asyncio.Semaphore(limit)
        self._timeout = timeout
        self._reply_timeout = reply_timeout
        self._owed: dict[Any, tuple[float, Batch]] = {}  # as Wire's
        self._unsent: list[tuple[float, Batch]] = []

    async def send(self, commands: Sequence[Command], scripts: Sequence[str] = ()) -> list[Any]:
        """As :meth:`Wire.send`."""
        replies = await self._limited(self._send, commands)
        if _lost(replies, scripts):
            await self._limited(self._send, _loads(scripts))
            replies = await self._limited(self._send, commands)
        return replies

    async def post(
        self, commands: Sequence[Command], scripts: Sequence[str] = (), *, retry_for: float = 0.0
    ) -> None:
        """As :meth:`Wire.post`: sent, not waited for; read before the connection's next use."""
        deadline_ = time.monotonic() + retry_for
        await self._limited(lambda batch: self._post(batch, (deadline_, (commands, scripts))), commands)

    async def settle(self) -> None:
        """As :meth:`Wire.settle`."""
        owing = {c: self._owed.pop(c) for c in self._idle if c in self._owed}
        self._idle = [c for c in self._idle if c not in owing]
        for connection, owed in owing.items():
            settled = await self._settle(connection, owed)
            if not self._give(settled):
                await drop(settled)
        unsent, self._unsent = self._unsent, []
        for index, (_, (commands, scripts)) in enumerate(unsent):
            try:
                _log_errors(_unrefused(await self.send(commands, scripts)))
            except UNREACHABLE:
                self._unsent[:0] = _still_due(unsent[index:])
                raise

    async def _limited(
        self, send: Callable[[Sequence[Command]], Awaitable[T]], commands: Sequence[Command]
    ) -> T:
        limit = self._limit
        if limit is None:
            return await send(commands)
        if limit.locked():
            with anyio.move_on_after(self._timeout) as waited:
                await limit.acquire()
            if waited.cancelled_caught:
                raise RedisConnectionError(f"no Redis connection free within {self._timeout:g} s")
        else:
            await limit.acquire()
        try:
            return await send(commands)
        finally:
            limit.release()

    async def _take(self) -> tuple[Any, bool]:
        """As :meth:`Wire._take` (a connection that owes replies reads them first)."""
        self._closed = False
        if not self._idle:
            return self._make(), False
        connection = self._idle.pop()
        owed = self._owed.pop(connection, None)
        if owed is None:
            return connection, True
        settled = await self._settle(connection, owed)
        return settled, settled is connection

    def _give(self, connection: Any) -> bool:
        """Back to the idle ones; False if the wire closed meanwhile (then drop it)."""
        if self._closed:
            return False
        self._idle.append(connection)
        return True

    async def _settle(self, connection: Any, owed: tuple[float, Batch]) -> Any:
        """As :meth:`Wire._settle`."""
        commands, scripts = owed[1]
        try:
            async with deadline(self._reply_timeout):
                replies = [await _read_async(connection) for _ in commands]
        except (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError):
            await drop(connection)
            self._unsent.append(owed)
            return self._make()
        except BaseException:
            await drop(connection)
            self._unsent.append(owed)
            raise
        if _lost(replies, scripts) or _refused(replies):
            self._unsent.append(owed)
        else:
            _log_errors(replies)
        return connection

    async def _post(self, commands: Sequence[Command], owed: tuple[float, Batch]) -> None:
        connection, waited = await self._take()
        while True:
            try:
                async with deadline(self._reply_timeout):
                    await connection.send_packed_command(_pack(connection, commands), check_health=False)
            except RedisConnectionError:
                await drop(connection)
                if not waited:
                    raise
                await self._drop_idle()
                connection, waited = self._make(), False
                continue
            except asyncio.TimeoutError:
                await drop(connection)
                raise RedisTimeoutError(
                    f"Redis did not take a write within {self._reply_timeout:g} s"
                ) from None
            except ResponseError as exc:  # the handshake's: a command's reply is returned
                await drop(connection)
                raise not_serving(exc) from None
            except BaseException:
                await drop(connection)
                raise
            if self._closed:  # closed meanwhile: answered, then closed
                await drop(await self._settle(connection, owed))
            else:
                self._owed[connection] = owed
                self._idle.append(connection)
            return

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        connection, waited = await self._take()
        while True:
            try:
                async with deadline(self._reply_timeout):
                    await connection.send_packed_command(_pack(connection, commands), check_health=False)
                    replies = [await _read_async(connection) for _ in commands]
            except RedisConnectionError:
                await drop(connection)
                if not waited:
                    raise
                await self._drop_idle()  # see Wire.send
                connection, waited = self._make(), False
                continue
            except asyncio.TimeoutError:  # (TimeoutError from 3.11)
                await drop(connection)
                raise RedisTimeoutError(f"Redis did not answer within {self._reply_timeout:g} s") from None
            except ResponseError as exc:  # the handshake's: a command's reply is returned
                await drop(connection)
                raise not_serving(exc) from None
            except BaseException:
                await drop(connection)
                raise
            if not self._give(connection):
                await drop(connection)
            return replies

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        self._unsent.extend(self._owed.pop(connection) for connection in idle if connection in self._owed)
        for connection in idle:
            await drop(connection)

    async def close(self) -> None:
        """As :meth:`Wire.close`."""
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await self.settle()
        self._closed = True
        await self._drop_idle()


async def _read_async(connection: Any) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return not_serving(exc)


async def drop(connection: Any) -> None:
    """Close ``connection`` (cancelled or not: its state is unknown, it is never reused)."""
    with anyio.CancelScope(shield=True):
        await connection.disconnect(nowait=True)
