"""Django: the hub inside a Django project's ASGI application, its tasks on the ORM, and
the logged-in Django user as the owner of the tasks it submits.

- :func:`asgi` — ``application = sse_tasks.django.asgi(hub, prefix="/jobs")`` in the
  project's ``asgi.py``: the hub under the prefix, everything else to Django, and the
  hub's lifespan run (Django runs none).
- :func:`task` — register a task function whose sync runs close Django's database
  connections as a request does.
- :func:`submit` — submit from a sync view (Django runs it in a worker thread).
- :func:`session_owner` — the authorization hook: Django's session user owns its tasks.

Over WSGI with an engine the hub runs beside Django (``sse-tasks serve --app …``) and a
view hands the page a token from ``sse_tasks.TaskTokens(secret).issue(task_id)``: plain
sync code, no hub needed (see ``docs/django.md``).

Importing this module imports Django (the ``django`` extra); ``import sse_tasks`` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ParamSpec, TypeVar, cast

from asgiref.sync import async_to_sync, sync_to_async
from django.db import close_old_connections
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ._core.errors import Unauthorized
from ._core.models import Task
from ._hub import TaskHub
from .web.auth import Access, Decision
from .web.proxy import check_prefix

logger = logging.getLogger("sse_tasks")

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


# -- ASGI: one application for Django and the hub ----------------------------------------------


def asgi(hub: TaskHub, prefix: str = "/jobs", django: ASGIApp | None = None) -> DjangoWithHub:
    """The project's ASGI application: ``hub`` under ``prefix``, everything else to ``django``.

    ``django`` defaults to ``django.core.asgi.get_asgi_application()`` (so set
    ``DJANGO_SETTINGS_MODULE`` first, as ``asgi.py`` does). Raises ``ValueError`` for a
    prefix that is not ``/segment[/segment…]``.
    """
    if django is None:
        from django.core.asgi import get_asgi_application

        django = get_asgi_application()
    return DjangoWithHub(hub, prefix, django)


class DjangoWithHub:
    """An ASGI app: the hub's routes under a prefix, Django for the rest, the hub's lifespan.

    A hub request keeps its full ``path`` and gets the prefix appended to its
    ``root_path`` (as Starlette's ``Mount`` does), so the hub routes it and builds its
    links as ``<root_path><prefix>/tasks/…``. ``lifespan`` messages (uvicorn sends them)
    enter the hub on startup and leave it on shutdown; they never reach Django, which
    refuses them. A server run with ``--lifespan off`` sends none: the hub then starts
    on the first request and stops when the server's loop ends.
    """

    def __init__(self, hub: TaskHub, prefix: str, django: ASGIApp) -> None:
        self.hub = hub
        self.prefix = check_prefix(prefix)
        if not self.prefix:
            raise ValueError("the hub needs a path prefix of its own, such as '/jobs'")
        self.django = django
        self.hub_app: ASGIApp = hub.app
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if not self._started:
            await self._start_lazily()
        root_path = scope.get("root_path", "")
        path: str = scope["path"]
        route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        if route_path == self.prefix or route_path.startswith(self.prefix + "/"):
            await self.hub_app({**scope, "root_path": root_path + self.prefix}, receive, send)
        else:
            await self.django(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(self.hub.lifespan())
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"the sse_tasks hub: {exc!r}"})
                    return
                self._started = True
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": f"the sse_tasks hub: {exc!r}"})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _start_lazily(self) -> None:
        """Without lifespan messages (``--lifespan off``), run the hub in a task of its own."""
        if self._starting is None:
            logger.info("sse_tasks: no ASGI lifespan; the hub starts on this first request")
            self._starting = asyncio.get_running_loop().create_future()
            self._keeper = asyncio.get_running_loop().create_task(self._keep(self._starting))
        await asyncio.shield(self._starting)

    async def _keep(self, started: asyncio.Future[None]) -> None:
        try:
            async with self.hub:
                self._started = True
                started.set_result(None)
                await asyncio.Event().wait()  # until the server's loop ends and cancels it
        except Exception as exc:
            if not started.done():
                started.set_exception(RuntimeError(f"the sse_tasks hub did not start: {exc!r}"))
            else:
                logger.exception("sse_tasks: the hub stopped")


# -- task functions on the ORM ------------------------------------------------------------------


def task(hub: TaskHub, *, name: str | None = None, timeout: float | None = None) -> Callable[[F], F]:
    """Register a task function on ``hub`` (decorator), Django's connections handled.

    A plain ``def`` runs in one of the hub's worker threads, which outlive the task and
    hold a database connection each: each run calls ``django.db.close_old_connections()``
    before and after, as Django does around a request, so a run starts on a usable
    connection and leaves none open past ``CONN_MAX_AGE``. An ``async def`` is
    registered as it is: it uses Django's async ORM (``await Model.objects.acreate()``).
    Returns what it registered (a sync function wrapped by :func:`closing_connections`),
    so ``hub.submit(fn)`` finds it; raises like :meth:`TaskHub.register`.
    """

    def register(func: F) -> F:
        runs = func if inspect.iscoroutinefunction(func) else cast(F, closing_connections(func))
        hub.register(runs, name=name or func.__name__, timeout=timeout)
        return runs

    return register


def closing_connections(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` with ``django.db.close_old_connections()`` called before and after each call."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


# -- submitting from views ----------------------------------------------------------------------


def submit(
    hub: TaskHub,
    func_or_name: Callable[..., Any] | str,
    params: Mapping[str, Any] | None = None,
    *,
    user: Any = None,
) -> Task:
    """Submit from a sync view served by :func:`asgi`; returns the task's snapshot.

    Django runs a sync view in a worker thread; the submission is handed to the event
    loop the hub runs on (``asgiref.sync.async_to_sync``). ``user`` (``request.user``)
    becomes the task's owner when logged in (see :func:`owner_id`). Async views
    ``await hub.submit_json(fn, params, owner=owner_id(await request.auser()))``.
    Under a WSGI server there is no such loop: send the work to an engine instead.
    Raises like :meth:`TaskHub.submit`.
    """
    return async_to_sync(hub.submit_json)(func_or_name, dict(params or {}), owner=owner_id(user))


def owner_id(user: Any) -> str | None:
    """The owner a Django user stands for: its primary key as a string; None when anonymous."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


# -- the authorization hook ---------------------------------------------------------------------


@dataclass(frozen=True)
class SessionOwner:
    """Django's session user as the caller: ``TaskHub(identify=o.identify, authorize=o.authorize)``.

    Made by :func:`session_owner`.
    """

    staff_sees_all: bool = False

    async def identify(self, request: Request) -> str | None:
        """The logged-in user's id (:func:`owner_id`), read from the session cookie."""
        return owner_id(await self.user(request))

    async def authorize(self, access: Access) -> Decision:
        """Logged-in users submit (anonymous: 401); each sees, follows and cancels its own
        tasks or one whose token it presents; staff every task if ``staff_sees_all``."""
        user = await self.user(access.request)
        if access.action == "submit":
            if owner_id(user) is None:
                raise Unauthorized("log in to start tasks")
            return True
        if self.staff_sees_all and getattr(user, "is_staff", False) and getattr(user, "is_active", False):
            return True
        caller, tokens = owner_id(user), access.tokens
        return lambda task: (caller is not None and task.owner == caller) or task.id in tokens

    async def user(self, request: Request) -> Any:
        """The request's Django user (``AnonymousUser`` without a valid session), looked up
        once per request through the session engine and the auth backends."""
        state = request.scope.setdefault("state", {})
        if "sse_tasks.django.user" not in state:
            from django.conf import settings

            key = request.cookies.get(settings.SESSION_COOKIE_NAME)
            # Not thread_sensitive: outside Django's own handler that would run every lookup
            # of every hub request on one shared thread.
            lookup = sync_to_async(closing_connections(_session_user), thread_sensitive=False)
            state["sse_tasks.django.user"] = await lookup(key)
        return state["sse_tasks.django.user"]


def _session_user(session_key: str | None) -> Any:
    from django.conf import settings
    from django.contrib.auth import get_user
    from django.http import HttpRequest

    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(request)


def session_owner(*, staff_sees_all: bool = False) -> SessionOwner:
    """The hook that makes the logged-in Django user (session auth) the owner of its tasks.

    ``owner = session_owner(); TaskHub(identify=owner.identify, authorize=owner.authorize)``.
    Each user sees, follows and cancels only its own tasks (another's answers 404, as an
    unknown id); with ``staff_sees_all`` an active staff user sees every task.
    """
    return SessionOwner(staff_sees_all)


__all__ = [
    "DjangoWithHub",
    "SessionOwner",
    "asgi",
    "closing_connections",
    "owner_id",
    "session_owner",
    "submit",
    "task",
]
