"""A Python client for an sse-tasks server: submit, get, list, cancel and follow tasks.

    async with AsyncClient("http://localhost:8000") as client:
        task = await client.submit("count", n=5)
        async for snapshot in client.follow(task.id):
            print(snapshot.state, snapshot.progress, snapshot.message)

``Client`` is the same API, synchronous. ``base_url`` is where the hub is mounted (the
URL that ``/tasks`` and ``/events`` are relative to).

Error answers raise the :mod:`sse_tasks` exception of their code (``NotFound``,
``InvalidRequest``, ``TaskFinished``, ``Unavailable``, …; :class:`APIError` for any
other), and a server that cannot be reached raises :class:`ConnectionFailed`.
``follow`` survives dropped connections and server restarts: it reconnects with
``Last-Event-ID`` (bounded retries, exponential backoff), so it yields every change
exactly once; ``follow(id, output=True)`` also yields each :class:`OutputChunk` once.
``follow_tasks(tags=…)`` does the same for every task of a selection (first paint from
``GET /tasks``, then ``/events`` from its cursor), and never ends by itself.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast, overload
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse, connect_sse

from ._core import codec
from ._core.errors import NotFound, SSETasksError, TaskGone, Unavailable, error_class
from ._core.event_stream import Event, EventReader
from ._core.following import Following, FollowingTasks, MalformedAnswer, split_task_url, task_from_data
from ._core.models import OutputChunk, Task, TaskState
from ._core.text import ascii_int, escape_controls

__all__ = ["APIError", "AsyncClient", "Client", "ConnectionFailed", "OutputChunk", "split_task_url"]

_DEFAULT_TIMEOUT = 10.0
#: Characters one event of a stream may take, its lines together. The largest a hub with
#: its default bounds sends is an output chunk of 1 MiB: at most 6 Mi characters of JSON.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024
#: Bytes an answer that is not a stream may take: a page of 100 tasks (``list``'s
#: default) with results of 1 MiB each, the most a task may return, is well under it.
DEFAULT_MAX_ANSWER_SIZE = 256 * 1024 * 1024
#: Bytes of an error answer read (its JSON is a few hundred); the rest is left unread.
_ERROR_BYTES = 64 * 1024
#: A stream is asked for as is: its reads stay within ``max_event_size``.
_STREAM_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Accept-Encoding": "identity"}
_T = TypeVar("_T")
# What ``follow`` returns, as the generators they are (to close one left early).
_AsyncItems = AsyncGenerator["Task | OutputChunk", None]
_Items = Generator["Task | OutputChunk", None, None]


class APIError(SSETasksError):
    """An error answer that no more specific exception describes (see ``status_code``)."""

    def __init__(self, message: str, *, status_code: int, code: str = "error") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class ConnectionFailed(SSETasksError):
    """The server could not be reached (or ``follow`` ran out of reconnection attempts)."""

    code = "unreachable"


def error_from_response(response: httpx.Response) -> SSETasksError:
    """The exception for an error answer ``{"error": {"code": …, "message": …}}``."""
    status = response.status_code
    try:
        error = response.json()["error"]
        code, message = str(error["code"])[:100], str(error["message"])[:1000]
    except (ValueError, KeyError, TypeError, RecursionError):
        code, message = "", response.text[:200] or response.reason_phrase
    # One line, shown as sent: a server's line breaks or terminal escapes are not obeyed.
    message = escape_controls(message)
    message = f"{message} ({response.request.method} {response.request.url} → {status})"
    if status == 503:
        seconds = _retry_after(response.headers)
        return Unavailable(message, code=code or "unavailable", retry_after=seconds)
    chosen = error_class(status, code)
    if chosen is not None:
        return chosen(message)
    return APIError(message, status_code=status, code=code or "error")


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _body(response: httpx.Response) -> Any:
    """The JSON of a successful answer (strict), or ``APIError`` for anything else."""
    try:
        return codec.loads(response.content)
    except (ValueError, RecursionError):
        shown = _CONTROL.sub("?", response.text[:200])
        raise APIError(
            f"the server answered {response.status_code} with a body that is not JSON: {shown!r}",
            status_code=response.status_code,
        ) from None


def _tasks_of(body: Any) -> list[Task]:
    """The snapshots of a ``GET /tasks`` answer."""
    items = body.get("tasks") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise APIError("the server answered a task list without its tasks", status_code=200)
    return [_task(item) for item in items]


class _Answer:
    """The body of an answer that is not a stream, read within bounds: at most ``limit``
    bytes (an error's first :data:`_ERROR_BYTES` only), all of it by ``deadline``
    (monotonic): a server that never ends one, or trickles it, gets an error."""

    def __init__(self, response: httpx.Response, limit: int, timeout: float) -> None:
        self.response = response
        self.error = response.status_code >= 400
        self.limit = _ERROR_BYTES if self.error else limit
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.chunks: list[bytes] = []
        self.size = 0

    def take(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once an error answer's first bytes are in (read no more)."""
        self.size += len(chunk)
        if self.size > self.limit:
            if self.error:
                self.chunks.append(chunk[: len(chunk) - (self.size - self.limit)])
                return False
            raise APIError(
                f"the server's answer is larger than {self.limit} bytes (max_answer_size)",
                status_code=self.response.status_code,
            )
        self.chunks.append(chunk)
        if time.monotonic() > self.deadline:
            raise httpx.ReadTimeout(f"the answer took longer than {self.timeout:g} s")
        return True

    def read(self) -> httpx.Response:
        """The answer with its body read (and decoded: its encoding headers dropped)."""
        dropped = ("content-encoding", "content-length", "transfer-encoding")
        headers = [(k, v) for k, v in self.response.headers.multi_items() if k.lower() not in dropped]
        body = b"".join(self.chunks)
        return httpx.Response(
            self.response.status_code, headers=headers, content=body, request=self.response.request
        )


async def _aread_answer(response: httpx.Response, limit: int, within: float) -> httpx.Response:
    """``response`` read whole, at most ``limit`` bytes in ``within`` seconds (:class:`_Answer`)."""
    answer = _Answer(response, limit, within)
    async for chunk in response.aiter_bytes():
        if not answer.take(chunk):
            break
    return answer.read()


def _read_answer(response: httpx.Response, limit: int, within: float) -> httpx.Response:
    """:func:`_aread_answer`, synchronous."""
    answer = _Answer(response, limit, within)
    for chunk in response.iter_bytes():
        if not answer.take(chunk):
            break
    return answer.read()


def _reader(response: httpx.Response, max_event_size: int) -> EventReader:
    """The reader of a stream's events. ``SSEError`` (which ``follow`` retries) if the
    answer is not a stream; ``APIError`` if it came compressed although the client asked
    for it as is (httpx would inflate each read whole, past any bound)."""
    content_type = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in content_type.lower():
        raise SSEError(f"expected an event stream (text/event-stream), got {content_type[:100]!r}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise APIError(
            f"the stream came compressed (Content-Encoding: {encoding[:50]}), although the client "
            "asked for it as is (Accept-Encoding: identity)",
            status_code=response.status_code,
        )
    return EventReader(max_event_size)


async def _aread_events(response: httpx.Response, max_event_size: int) -> AsyncIterator[Event]:
    """The events of a stream, each at most ``max_event_size`` characters (``APIError``
    for a longer one: a line without end would otherwise be held without end)."""
    reader = _reader(response, max_event_size)
    try:
        async for text in response.aiter_text():
            for event in reader.feed(text):
                yield event
    except MalformedAnswer as exc:
        raise APIError(str(exc), status_code=200) from None


def _read_events(response: httpx.Response, max_event_size: int) -> Iterator[Event]:
    """:func:`_aread_events`, synchronous."""
    reader = _reader(response, max_event_size)
    try:
        for text in response.iter_text():
            yield from reader.feed(text)
    except MalformedAnswer as exc:
        raise APIError(str(exc), status_code=200) from None


def _answer(parse: Callable[..., _T], *args: Any) -> _T:
    """``parse(*args)``: a snapshot or chunk, or ``APIError`` for what is neither."""
    try:
        return parse(*args)
    except MalformedAnswer as exc:
        raise APIError(str(exc), status_code=200) from None


_task: Callable[[Any], Task] = functools.partial(_answer, task_from_data)


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        stream_timeout: float | None = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 300.0,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE,
    ) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff and max_retry_after must be >= 0")
        if max_event_size < 1 or max_answer_size < 1:
            raise ValueError("max_event_size and max_answer_size must be at least 1")
        self.base_url = base_url.rstrip("/")
        #: ``base_url`` as messages show it: without a password it may carry.
        self.shown_url = _without_password(self.base_url)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_event_size = max_event_size
        self.max_answer_size = max_answer_size
        self._headers = dict(headers or {})
        self._params = dict(params or {})
        self._timeout = timeout
        # A stream is silent between heartbeats (15 s by default): a longer silence
        # means a dead connection, which ``follow`` then replaces.
        self._stream_timeout = httpx.Timeout(timeout, read=stream_timeout)

    def _delay(self, failures: int, retry_after: float = 0.0) -> float:
        """Exponential backoff with jitter, at least what the server asked for, up to
        ``max_retry_after`` (a server's ``Retry-After`` may say days)."""
        delay = min(self.max_backoff, self.backoff * 2.0 ** (failures - 1))
        return max(min(retry_after, self.max_retry_after), delay * (0.5 + random.random() / 2))  # noqa: S311

    def _task_path(self, task_id: str) -> str:
        return f"/tasks/{quote(task_id, safe='')}"

    def _stream(self, task_id: str, last_event_id: str | None) -> dict[str, Any]:
        """The request that opens the task's stream, resuming after ``last_event_id``."""
        headers = {**self._headers, **_STREAM_HEADERS}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = self.base_url + self._task_path(task_id) + "/events"
        return dict(method="GET", url=url, headers=headers, params=self._params, timeout=self._stream_timeout)

    @staticmethod
    def _list_params(
        state: str | TaskState | None, name: str | None, limit: int | None, tags: Sequence[str] | None
    ) -> dict[str, str | list[str]]:
        values = {"state": state, "name": name, "limit": limit}
        params: dict[str, str | list[str]] = {
            key: str(value) for key, value in values.items() if value is not None
        }
        if tags:
            params["tag"] = list(tags)
        return params

    @staticmethod
    def _submit_body(
        name: str, params: Mapping[str, Any] | None, extra: dict[str, Any], tags: Sequence[str] | None
    ) -> dict[str, Any]:
        body = {"name": name, "params": {**(params or {}), **extra}}
        if tags is not None:
            body["tags"] = list(tags)
        return body

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code >= 300:  # the API never redirects: a proxy or another server does
            where = _CONTROL.sub("?", response.headers.get("Location", "")[:200])
            raise APIError(
                f"the server answered {response.status_code}, a redirect to {where!r}, where the API answers",
                status_code=response.status_code,
            )
        return response

    def _give_up_after(self, failures: int, what: str, error_text: str) -> None:
        """Raise ``ConnectionFailed`` once ``failures`` in a row exceed ``retries``."""
        if failures > self.retries:
            raise ConnectionFailed(
                f"lost {what} at {self.shown_url} after {self.retries} retries: {error_text}"
            )

    def _events(
        self, selection: dict[str, str | builtins.list[str]], last_event_id: str | None
    ) -> dict[str, Any]:
        """The request that opens ``/events`` for ``selection``, resuming after ``last_event_id``."""
        headers = {**self._headers, **_STREAM_HEADERS}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        params = {**self._params, **selection}
        return dict(
            method="GET",
            url=self.base_url + "/events",
            headers=headers,
            params=params,
            timeout=self._stream_timeout,
        )

    @staticmethod
    def _selection(
        tags: Sequence[str] | None, name: str | None, task_ids: Sequence[str] | None, output: bool
    ) -> dict[str, str | builtins.list[str]]:
        """The query of ``/events`` (and, without ``output``, of the first paint's list)."""
        selection: dict[str, str | builtins.list[str]] = {}
        if tags:
            selection["tag"] = list(tags)
        if name is not None:
            selection["name"] = name
        if task_ids is not None:
            if not task_ids:
                raise ValueError("task_ids must name at least one task")
            selection["task"] = list(task_ids)
        if output:
            selection["output"] = "1"
        return selection

    def _refusal(self, task_id: str, response: httpx.Response, followed: bool) -> Unavailable:
        """The 503 to retry after; raises any other error answer to a stream request."""
        error = error_from_response(response)
        if isinstance(error, Unavailable):
            return error
        if followed and response.status_code in (404, 410):
            # It was there a moment ago: say why that usually happens.
            error.message = (
                f"task {task_id!r} is no longer known to the server; it may have restarted "
                f"with an in-memory broker ({error.message})"
            )
            error.args = (error.message,)
        raise error

    def _unreachable(self, action: str, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(f"cannot {action} at {self.shown_url}: {exc or type(exc).__name__}")


class AsyncClient(_Base):
    """Asynchronous client of one sse-tasks server.

    Arguments: ``base_url`` (where the hub is mounted), ``headers`` and query ``params``
    sent with every request (e.g. ``Authorization``, a token), ``timeout`` per request,
    ``stream_timeout`` (the longest silence on a stream before it counts as broken), and
    ``retries``, ``backoff`` and ``max_backoff`` (seconds) for ``follow``'s reconnections,
    which wait at least a server's ``Retry-After``, up to ``max_retry_after`` seconds.
    An event of a stream longer than ``max_event_size`` characters raises ``APIError``
    (the server's are far smaller), and so does an answer of more than
    ``max_answer_size`` bytes; ``timeout`` bounds a whole answer, not each read.
    ``http`` lets you bring your own ``httpx.AsyncClient`` (its base URL is ignored).
    """

    def __init__(self, base_url: str, *, http: httpx.AsyncClient | None = None, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (only those of an ``httpx.AsyncClient`` it created)."""
        if self._owns_http:
            await self._http.aclose()

    async def _request(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        try:
            async with self._http.stream(
                method,
                self.base_url + path,
                headers=self._headers,
                params={**self._params, **kwargs.pop("params", {})},
                timeout=self._timeout,
                **kwargs,
            ) as streamed:
                response = await _aread_answer(streamed, self.max_answer_size, self._timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(action, exc) from exc
        return self._check(response)

    async def submit(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        tags: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Task:
        """Start task ``name`` with ``params`` (a mapping and/or keywords) and ``tags``; its
        first snapshot. (A param named ``tags`` goes in the ``params`` mapping.)

        Raises ``NotFound`` (no such task name), ``InvalidRequest`` (params the function
        does not accept), ``Unavailable`` (queue full, shutting down).
        """
        body = self._submit_body(name, params, kwargs, tags)
        response = await self._request("POST", "/tasks", f"submit {name!r}", json=body)
        return _task(_body(response))

    async def get(self, task_id: str) -> Task:
        """The task's current snapshot. Raises ``NotFound`` (or ``TaskGone`` once expired)."""
        response = await self._request("GET", self._task_path(task_id), f"get task {task_id!r}")
        return _task(_body(response))

    async def list(
        self,
        *,
        state: str | TaskState | None = None,
        name: str | None = None,
        limit: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> builtins.list[Task]:
        """Snapshots of the server's tasks, newest first, optionally filtered (``tags``: those
        carrying every one)."""
        params = self._list_params(state, name, limit, tags)
        response = await self._request("GET", "/tasks", "list tasks", params=params)
        return _tasks_of(_body(response))

    async def cancel(self, task_id: str) -> Task:
        """Cancel the task; its snapshot. Raises ``TaskFinished`` if it already ended."""
        response = await self._request("DELETE", self._task_path(task_id), f"cancel task {task_id!r}")
        return _task(_body(response))

    async def output(self, task_id: str) -> str:
        """The task's retained output text (its ``output`` chunks joined; no log lines)."""
        path = self._task_path(task_id) + "/output"
        return (await self._request("GET", path, f"get the output of task {task_id!r}")).text

    @overload
    def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: Literal[False] = False
    ) -> AsyncIterator[Task]: ...

    @overload
    def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: bool
    ) -> AsyncIterator[Task | OutputChunk]: ...

    async def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: bool = False
    ) -> AsyncIterator[Task | OutputChunk]:
        """Yield the task's snapshot, then one per change, ending with the terminal one.

        With ``output=True``, also each :class:`OutputChunk` the task writes (its output
        so far first, then as it comes), each once, in order, before the terminal
        snapshot, which is always the last item.

        Reconnects with ``Last-Event-ID`` when the connection drops or the server
        restarts, at most ``retries`` times in a row, waiting with exponential backoff.
        ``last_event_id`` resumes after an item's ``event_id`` from an earlier follow.
        Raises ``NotFound`` if the task is unknown (or forgotten by a restarted
        server) and ``ConnectionFailed`` when the retries are used up.
        """
        following = Following(last_event_id, output=output, task_id=task_id)
        failures = 0
        followed = False
        while True:
            retry_after = 0.0
            try:
                async with aconnect_sse(
                    self._http, **self._stream(task_id, following.last_event_id)
                ) as source:
                    response = source.response
                    if response.status_code == 204:  # resumed at or past its terminal event
                        yield await self.get(task_id)
                        return
                    if response.status_code >= 400:
                        response = await _aread_answer(response, self.max_answer_size, self._timeout)
                        refusal = self._refusal(task_id, response, followed)
                        retry_after = _retry_after(refusal.headers)
                        error_text = refusal.message
                    else:
                        resumed_from = following.last_event_id
                        async for event in _aread_events(response, self.max_event_size):
                            item = _answer(following.feed, event.event, event.id, event.data)
                            if event.data:  # not the "retry:" that opens a stream
                                followed = True
                                if following.last_event_id != resumed_from:
                                    failures = 0  # it went on: the stream's end is no failure
                            if item is not None:
                                yield item
                            if following.finished:
                                return
                        if following.last_event_id != resumed_from:
                            continue  # it ended after new events (its lifetime, say): resume at once
                        # (Events that moved nothing, a reset again and again, count as a failure.)
                        error_text = "the stream ended before the task did, with no new event"
            except httpx.TransportError as exc:
                error_text = str(exc) or type(exc).__name__
            failures += 1
            self._give_up_after(failures, f"task {task_id!r}", error_text)
            await anyio.sleep(self._delay(failures, retry_after))

    @overload
    def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: Literal[False] = False,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Task]: ...

    @overload
    def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: bool,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Task | OutputChunk]: ...

    async def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: bool = False,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Task | OutputChunk]:
        """Yield the snapshots of every selected task, then one per change, never ending.

        Selects the tasks carrying every one of ``tags``, named ``name``, or with these
        ``task_ids`` (any together). First paint: the tasks listed now (newest first, at
        most ``limit``, or each of ``task_ids``), then ``/events`` from the list's cursor,
        so nothing in between is missed. With ``output=True`` also each task's
        output chunks (:class:`OutputChunk`), once and in order from its first (what it
        wrote before the paint is fetched from its own stream). Reconnects with ``Last-Event-ID`` as
        ``follow`` does, so every change comes once, in order. After a ``reset`` (the
        server's history no longer reaches back) the current snapshot of every selected
        task follows: replace what you hold by id. ``last_event_id`` resumes after an
        item's ``event_id`` instead of painting. Break out of the loop to stop.
        """
        selection = self._selection(tags, name, task_ids, output)
        what = _selected(tags, name, task_ids)
        following = FollowingTasks(last_event_id, output=output)
        failures = quiet = 0
        while following.last_event_id is None:  # the first paint
            try:
                cursor, tasks = await self._paint(tags, name, task_ids, limit)
            except (ConnectionFailed, Unavailable) as exc:
                failures += 1
                self._give_up_after(failures, what, exc.message)
                await anyio.sleep(self._delay(failures, _retry_after(exc.headers)))
                continue
            for task in following.paint(tasks, cursor):
                yield task
                async for chunk in self._backfill(following, following.missing(task, painted=True)):
                    yield chunk
        failures = 0
        while True:
            retry_after = 0.0
            try:
                async with aconnect_sse(
                    self._http, **self._events(selection, following.last_event_id)
                ) as source:
                    response = source.response
                    if response.status_code >= 400:
                        response = await _aread_answer(response, self.max_answer_size, self._timeout)
                        refusal = self._refusal(what, response, False)
                        retry_after = _retry_after(refusal.headers)
                        error_text = refusal.message
                    else:
                        received, resumed_from = False, following.last_event_id
                        async for event in _aread_events(response, self.max_event_size):
                            item = _answer(following.feed, event.event, event.id, event.data)
                            if event.data:  # not the "retry:" that opens a stream
                                received = True
                                if following.last_event_id != resumed_from:
                                    failures = quiet = 0
                            if item is None:
                                continue
                            async for chunk in self._backfill(following, following.missing(item)):
                                yield chunk
                            if following.take(item):
                                yield item
                        if following.last_event_id != resumed_from:
                            continue
                        if not received:
                            # A quiet stream reached its lifetime: not a failure, but no busy loop.
                            quiet += 1
                            await anyio.sleep(self._delay(quiet))
                            continue
                        error_text = "the stream ended with no new event"
            except httpx.TransportError as exc:
                error_text = str(exc) or type(exc).__name__
            failures += 1
            self._give_up_after(failures, what, error_text)
            await anyio.sleep(self._delay(failures, retry_after))

    async def _backfill(
        self, following: FollowingTasks, missing: tuple[str, int, int] | None
    ) -> AsyncIterator[OutputChunk]:
        """The chunks ``missing`` names, from the task's own stream (none if it is gone)."""
        if missing is None:
            return
        task_id, _, end = missing
        try:
            async with contextlib.aclosing(cast(_AsyncItems, self.follow(task_id, output=True))) as items:
                async for item in items:
                    if isinstance(item, OutputChunk):
                        if item.seq >= end:
                            break
                        if following.take(item):
                            yield item
                        if item.seq == end - 1:
                            break
        except (NotFound, TaskGone):
            return  # expired since: there is nothing more to show

    async def _paint(
        self, tags: Sequence[str] | None, name: str | None, task_ids: Sequence[str] | None, limit: int | None
    ) -> tuple[str, builtins.list[Task]]:
        """The cursor, then the selected tasks' snapshots (read after it)."""
        params = self._list_params(None, name, 1 if task_ids is not None else limit, tags)
        body = _body(await self._request("GET", "/tasks", "list tasks", params=params))
        if task_ids is not None:
            return _cursor(body), [await self.get(task_id) for task_id in task_ids]
        return _cursor(body), _tasks_of(body)


class Client(_Base):
    """Synchronous client of one sse-tasks server: the same API as :class:`AsyncClient`."""

    def __init__(self, base_url: str, *, http: httpx.Client | None = None, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._owns_http = http is None
        self._http = http or httpx.Client()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (only those of an ``httpx.Client`` it created)."""
        if self._owns_http:
            self._http.close()

    def _request(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._http.stream(
                method,
                self.base_url + path,
                headers=self._headers,
                params={**self._params, **kwargs.pop("params", {})},
                timeout=self._timeout,
                **kwargs,
            ) as streamed:
                response = _read_answer(streamed, self.max_answer_size, self._timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(action, exc) from exc
        return self._check(response)

    def submit(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        tags: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Task:
        """See :meth:`AsyncClient.submit`."""
        body = self._submit_body(name, params, kwargs, tags)
        return _task(_body(self._request("POST", "/tasks", f"submit {name!r}", json=body)))

    def get(self, task_id: str) -> Task:
        """See :meth:`AsyncClient.get`."""
        return _task(_body(self._request("GET", self._task_path(task_id), f"get task {task_id!r}")))

    def list(
        self,
        *,
        state: str | TaskState | None = None,
        name: str | None = None,
        limit: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> builtins.list[Task]:
        """See :meth:`AsyncClient.list`."""
        params = self._list_params(state, name, limit, tags)
        response = self._request("GET", "/tasks", "list tasks", params=params)
        return _tasks_of(_body(response))

    def cancel(self, task_id: str) -> Task:
        """See :meth:`AsyncClient.cancel`."""
        return _task(_body(self._request("DELETE", self._task_path(task_id), f"cancel task {task_id!r}")))

    def output(self, task_id: str) -> str:
        """See :meth:`AsyncClient.output`."""
        path = self._task_path(task_id) + "/output"
        return self._request("GET", path, f"get the output of task {task_id!r}").text

    @overload
    def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: Literal[False] = False
    ) -> Iterator[Task]: ...

    @overload
    def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: bool
    ) -> Iterator[Task | OutputChunk]: ...

    def follow(
        self, task_id: str, *, last_event_id: str | None = None, output: bool = False
    ) -> Iterator[Task | OutputChunk]:
        """See :meth:`AsyncClient.follow`."""
        following = Following(last_event_id, output=output, task_id=task_id)
        failures = 0
        followed = False
        while True:
            retry_after = 0.0
            try:
                with connect_sse(self._http, **self._stream(task_id, following.last_event_id)) as source:
                    response = source.response
                    if response.status_code == 204:
                        yield self.get(task_id)
                        return
                    if response.status_code >= 400:
                        response = _read_answer(response, self.max_answer_size, self._timeout)
                        refusal = self._refusal(task_id, response, followed)
                        retry_after = _retry_after(refusal.headers)
                        error_text = refusal.message
                    else:
                        resumed_from = following.last_event_id
                        for event in _read_events(response, self.max_event_size):
                            item = _answer(following.feed, event.event, event.id, event.data)
                            if event.data:  # not the "retry:" that opens a stream
                                followed = True
                                if following.last_event_id != resumed_from:
                                    failures = 0  # it went on: the stream's end is no failure
                            if item is not None:
                                yield item
                            if following.finished:
                                return
                        if following.last_event_id != resumed_from:
                            continue  # it ended after new events (its lifetime, say): resume at once
                        # (Events that moved nothing, a reset again and again, count as a failure.)
                        error_text = "the stream ended before the task did, with no new event"
            except httpx.TransportError as exc:
                error_text = str(exc) or type(exc).__name__
            failures += 1
            self._give_up_after(failures, f"task {task_id!r}", error_text)
            time.sleep(self._delay(failures, retry_after))

    @overload
    def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: Literal[False] = False,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Task]: ...

    @overload
    def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: bool,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Task | OutputChunk]: ...

    def follow_tasks(
        self,
        *,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        task_ids: Sequence[str] | None = None,
        output: bool = False,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Task | OutputChunk]:
        """See :meth:`AsyncClient.follow_tasks`."""
        selection = self._selection(tags, name, task_ids, output)
        what = _selected(tags, name, task_ids)
        following = FollowingTasks(last_event_id, output=output)
        failures = quiet = 0
        while following.last_event_id is None:  # the first paint
            try:
                cursor, tasks = self._paint(tags, name, task_ids, limit)
            except (ConnectionFailed, Unavailable) as exc:
                failures += 1
                self._give_up_after(failures, what, exc.message)
                time.sleep(self._delay(failures, _retry_after(exc.headers)))
                continue
            for task in following.paint(tasks, cursor):
                yield task
                yield from self._backfill(following, following.missing(task, painted=True))
        failures = 0
        while True:
            retry_after = 0.0
            try:
                with connect_sse(self._http, **self._events(selection, following.last_event_id)) as source:
                    response = source.response
                    if response.status_code >= 400:
                        response = _read_answer(response, self.max_answer_size, self._timeout)
                        refusal = self._refusal(what, response, False)
                        retry_after = _retry_after(refusal.headers)
                        error_text = refusal.message
                    else:
                        received, resumed_from = False, following.last_event_id
                        for event in _read_events(response, self.max_event_size):
                            item = _answer(following.feed, event.event, event.id, event.data)
                            if event.data:  # not the "retry:" that opens a stream
                                received = True
                                if following.last_event_id != resumed_from:
                                    failures = quiet = 0
                            if item is None:
                                continue
                            yield from self._backfill(following, following.missing(item))
                            if following.take(item):
                                yield item
                        if following.last_event_id != resumed_from:
                            continue
                        if not received:
                            # A quiet stream reached its lifetime: not a failure, but no busy loop.
                            quiet += 1
                            time.sleep(self._delay(quiet))
                            continue
                        error_text = "the stream ended with no new event"
            except httpx.TransportError as exc:
                error_text = str(exc) or type(exc).__name__
            failures += 1
            self._give_up_after(failures, what, error_text)
            time.sleep(self._delay(failures, retry_after))

    def _backfill(
        self, following: FollowingTasks, missing: tuple[str, int, int] | None
    ) -> Iterator[OutputChunk]:
        if missing is None:
            return
        task_id, _, end = missing
        try:
            with contextlib.closing(cast(_Items, self.follow(task_id, output=True))) as items:
                for item in items:
                    if isinstance(item, OutputChunk):
                        if item.seq >= end:
                            break
                        if following.take(item):
                            yield item
                        if item.seq == end - 1:
                            break
        except (NotFound, TaskGone):
            return

    def _paint(
        self, tags: Sequence[str] | None, name: str | None, task_ids: Sequence[str] | None, limit: int | None
    ) -> tuple[str, builtins.list[Task]]:
        params = self._list_params(None, name, 1 if task_ids is not None else limit, tags)
        body = _body(self._request("GET", "/tasks", "list tasks", params=params))
        if task_ids is not None:
            return _cursor(body), [self.get(task_id) for task_id in task_ids]
        return _cursor(body), _tasks_of(body)


def _retry_after(headers: Mapping[str, str]) -> int:
    """Seconds from a ``Retry-After`` header (1 when it is missing or not a number of seconds)."""
    return ascii_int(headers.get("retry-after", headers.get("Retry-After", "1")).strip(), 6) or 1


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _cursor(body: Any) -> str:
    """The ``cursor`` of a ``GET /tasks`` answer."""
    cursor = body.get("cursor") if isinstance(body, dict) else None
    if not isinstance(cursor, str) or not cursor:
        raise APIError("the server listed tasks without a cursor to stream from", status_code=200)
    return cursor


def _selected(tags: Sequence[str] | None, name: str | None, task_ids: Sequence[str] | None) -> str:
    """The selection, in words, for error messages."""
    parts = [f"tagged {', '.join(tags)}"] if tags else []
    if name is not None:
        parts.append(f"named {name!r}")
    if task_ids is not None:
        parts.append(f"with ids {', '.join(task_ids)}")
    return "the tasks " + " and ".join(parts) if parts else "every task"
