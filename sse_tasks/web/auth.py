"""Who may do what to which task: the authorization hook and per-task capability tokens.

The hub asks one hook, ``authorize(access)``, on every request — every stream
(re)connect and resume included, never only at submit. It answers:

- ``True``: allowed; ``False``: denied;
- or a predicate ``Task -> bool``: the tasks this caller may act on. For one task it
  is applied to that task; for ``GET /tasks`` and ``/events`` it filters what the
  caller sees, snapshot by snapshot and event by event (so it must be cheap and sync).

The hook may be ``async`` and may raise :class:`Unauthorized` or :class:`Forbidden`
for a specific answer. A task the caller may not ``read`` answers exactly like a
missing one (404), so probing ids teaches nothing.

With :class:`TaskTokens` each ``202`` carries a signed, expiring token for its task,
accepted as ``Authorization: Bearer``, a cookie or ``?token=`` (repeatable); without a
hook, a task is then visible only with its token. A tag token
(:meth:`TaskTokens.issue_tag`) lets a page read and follow every task carrying its tag:
``GET /tasks?tag=<tag>``, ``/events?tag=<tag>`` and each such task's own stream, nothing
else (no cancel, no ``/events`` without ``?tag=`` naming it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .._core.errors import Forbidden, NotFound, TaskGone, Unavailable
from .._core.models import Task, check_tag
from .._core.text import ascii_int
from .openapi import Param

if TYPE_CHECKING:
    from starlette.requests import Request

    from .backend import TaskBackend

Action = Literal["submit", "read", "follow", "list", "cancel", "operate"]
TaskFilter = Callable[[Task], bool]
Decision = bool | TaskFilter
Authorizer = Callable[["Access"], Decision | Awaitable[Decision]]
Identify = Callable[["Request"], str | Awaitable[str | None] | None]

#: ``?token=``: a task token in the URL, for clients that cannot set a header (EventSource).
TOKEN = Param("token", {"type": "string"}, "a task token (with task tokens on); repeatable")
_MAX_TOKENS = 64  # tokens looked at per request: bounds the HMAC work a request can cause
_MAX_TOKEN_LENGTH = 512
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: What a tag token starts with: never in a task id, so a tag token cannot pass for a
#: task's (and its signed subject, ``~<tag>``, never equals a task id).
_TAG_MARK = "~"


@dataclass(frozen=True)
class Access:
    """One question to the authorization hook.

    Attributes:
        action: ``submit``, ``read`` (``GET /tasks/<id>``), ``follow`` (a stream),
            ``list`` (``GET /tasks``), ``cancel`` or ``operate`` (opening the dashboard;
            only ``True`` allows it).
        request: the Starlette request.
        caller: what the hub's ``identify(request)`` returned (None without it).
        tokens: ids of the tasks whose valid, unexpired token the request carries.
        task: the task acted on; None for ``submit``, ``list``, ``operate`` and ``/events``.
        name: the task name being submitted (``submit`` only).
        token_tags: the tags whose valid, unexpired tag token the request carries.
        selected_tags: the tags ``list`` and ``/events`` select (``?tag=``); every task
            they show carries all of them.
    """

    action: Action
    request: Request
    caller: str | None = None
    tokens: frozenset[str] = frozenset()
    task: Task | None = None
    name: str | None = None
    token_tags: frozenset[str] = frozenset()
    selected_tags: frozenset[str] = frozenset()

    def tag_grants(self) -> frozenset[str]:
        """The tags whose token grants this access: none for ``submit`` and ``cancel``; for
        ``list`` and ``/events`` only those the request also selects with ``?tag=``."""
        if self.action in ("submit", "cancel"):
            return frozenset()
        if self.task is None:
            return self.token_tags & self.selected_tags
        return self.token_tags


def tokens_only(access: Access) -> Decision:
    """The default hook with :class:`TaskTokens`: anyone may submit; a task is visible
    only to requests carrying its token."""
    if access.action == "submit":
        return True
    tokens, tags = access.tokens, access.tag_grants()
    if tags:
        return lambda task: task.id in tokens or not tags.isdisjoint(task.tags)
    return lambda task: task.id in tokens


def owner_only(access: Access) -> Decision:
    """A ready hook: identified callers submit; each sees and cancels only its own tasks
    (``task.owner == caller``), or a task whose token (or tag token) it presents."""
    caller = access.caller
    if access.action == "submit":
        return caller is not None
    tokens, tags = access.tokens, access.tag_grants()
    return lambda task: (
        (caller is not None and task.owner == caller) or task.id in tokens or not tags.isdisjoint(task.tags)
    )


class TaskTokens:
    """Signed, expiring capability tokens, each scoped to one task or one tag (HMAC-SHA256).

    Args:
        secret: the signing key (at least 16 bytes), or several: the first signs,
            all verify (rotate by prepending a new one).
        ttl: seconds a token stays valid.
        cookie: name of the cookie a token is also accepted from.
        clock: seconds since the epoch (tests pass a fake one).

    Raises ``ValueError`` for a short secret or a non-positive ``ttl``.
    """

    def __init__(
        self,
        secret: str | bytes | Iterable[str | bytes],
        *,
        ttl: float = 3600.0,
        cookie: str = "sse_tasks_token",
        clock: Callable[[], float] = time.time,
    ) -> None:
        given = [secret] if isinstance(secret, (str, bytes)) else list(secret)
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in given]
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("token secrets must be at least 16 bytes")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._keys = keys
        self.ttl = ttl
        self.cookie = cookie
        self.clock = clock

    def issue(self, task_id: str) -> str:
        """A token for ``task_id``, valid for ``ttl`` seconds from now."""
        expires = int(self.clock() + self.ttl)
        return f"{task_id}.{expires}.{self._sign(self._keys[0], task_id, expires)}"

    def issue_tag(self, tag: str) -> str:
        """A token for every task carrying ``tag``, valid for ``ttl`` seconds from now: it
        lets a page read and follow them (``/events?tag=<tag>``, ``GET /tasks?tag=<tag>``,
        each one's own stream), nothing else. ``ValueError`` for an invalid tag."""
        check_tag(tag)
        expires = int(self.clock() + self.ttl)
        return f"{_TAG_MARK}{tag}.{expires}.{self._sign(self._keys[0], _TAG_MARK + tag, expires)}"

    def verify(self, token: str) -> str | None:
        """The task id ``token`` grants, or None if it is malformed, forged or expired
        (or a tag token: :meth:`verify_tag`)."""
        if len(token) > _MAX_TOKEN_LENGTH:
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        task_id, raw_expires, signature = parts
        if not _TASK_ID.fullmatch(task_id):
            return None
        return task_id if self._valid(task_id, raw_expires, signature) else None

    def verify_tag(self, token: str) -> str | None:
        """The tag a tag token grants, or None if it is malformed, forged, expired or not one."""
        if len(token) > _MAX_TOKEN_LENGTH or not token.startswith(_TAG_MARK):
            return None
        rest = token.rsplit(".", 2)
        if len(rest) != 3:
            return None
        subject, raw_expires, signature = rest
        tag = subject[len(_TAG_MARK) :]
        try:
            check_tag(tag)
        except ValueError:
            return None
        return tag if self._valid(subject, raw_expires, signature) else None

    def _valid(self, subject: str, raw_expires: str, signature: str) -> bool:
        expires = ascii_int(raw_expires, 12)
        if expires is None:
            return False
        valid = False
        for key in self._keys:  # check every key: no early exit leaks which one matched
            valid |= hmac.compare_digest(self._sign(key, subject, expires), signature)
        return valid and expires > self.clock()

    def from_request(self, request: Request) -> frozenset[str]:
        """Task ids proven by the request's tokens (bearer header, cookie, ``?token=``)."""
        return self.grants(request)[0]

    def grants(self, request: Request) -> tuple[frozenset[str], frozenset[str]]:
        """The task ids and the tags proven by the request's tokens."""
        found: list[str] = []
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            found.append(credentials.strip())
        cookie = request.cookies.get(self.cookie)
        if cookie:
            found.append(cookie)
        found.extend(TOKEN.get_all(request))
        task_ids: set[str] = set()
        tags: set[str] = set()
        for token in found[:_MAX_TOKENS]:
            if token.startswith(_TAG_MARK):
                tag = self.verify_tag(token)
                if tag is not None:
                    tags.add(tag)
            else:
                task_id = self.verify(token)
                if task_id is not None:
                    task_ids.add(task_id)
        return frozenset(task_ids), frozenset(tags)

    @staticmethod
    def _sign(key: bytes, task_id: str, expires: int) -> str:
        message = f"sse-tasks/1:{task_id}:{expires}".encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Gate:
    """Puts the hub's hook (and tokens) to work for the routes."""

    def __init__(
        self,
        runner: TaskBackend,
        authorize: Authorizer | None = None,
        identify: Identify | None = None,
        tokens: TaskTokens | None = None,
    ) -> None:
        self.runner = runner
        #: The hub's hook; :func:`tokens_only` when it has tokens but no hook.
        self.authorize = tokens_only if authorize is None and tokens is not None else authorize
        self.identify = identify
        self.tokens = tokens

    @property
    def open(self) -> bool:
        """True without a hook or tokens: everything is allowed."""
        return self.authorize is None

    async def decide(
        self,
        action: Action,
        request: Request,
        task: Task | None = None,
        name: str | None = None,
        tags: frozenset[str] = frozenset(),
    ) -> Decision:
        """The hook's answer (``True`` when there is no hook); ``tags``: the ``?tag=`` selection."""
        authorize = self.authorize
        if authorize is None:
            return True
        task_ids, token_tags = (
            self.tokens.grants(request) if self.tokens is not None else (frozenset(), frozenset())
        )
        access = Access(
            action=action,
            request=request,
            caller=await self.caller(request),
            tokens=task_ids,
            task=task,
            name=name,
            token_tags=token_tags,
            selected_tags=tags,
        )
        decision = authorize(access)
        if inspect.isawaitable(decision):
            decision = await decision
        return decision

    async def caller(self, request: Request) -> str | None:
        """What ``identify(request)`` returns (awaited when it is async); None without it."""
        if self.identify is None:
            return None
        caller = self.identify(request)
        if inspect.isawaitable(caller):
            caller = await caller
        return caller

    async def require(self, action: Action, request: Request, name: str | None = None) -> None:
        """Allow ``submit`` (and only ``True`` allows it) or raise :class:`Forbidden`."""
        if await self.decide(action, request, name=name) is not True:
            raise Forbidden(f"not allowed to {action} here")

    async def task(self, action: Action, request: Request, task_id: str) -> Task:
        """The task, if the caller may ``action`` it; otherwise the same 404 as a missing one."""
        if self.open:
            return await self._get(action, task_id)
        not_found = NotFound(f"no task with id {task_id!r}")
        try:
            task = await self._get(action, task_id)
        except (NotFound, TaskGone):
            raise not_found from None  # 410 would confirm the id once existed
        if _allows(await self.decide(action, request, task), task):
            return task
        self.runner.stats.denied += 1
        if action != "read" and _allows(await self.decide("read", request, task), task):
            raise Forbidden(f"not allowed to {action} task {task_id!r}")
        raise not_found

    async def _get(self, action: Action, task_id: str) -> Task:
        try:
            return await self.runner.get(task_id)
        except Unavailable:
            # A cancel reaching the process that runs the task works in a broker
            # outage: that process knows the task (and its owner) itself.
            local = self.runner.local_task(task_id) if action == "cancel" else None
            if local is None:
                raise
            return local

    async def visible(
        self, action: Action, request: Request, tags: frozenset[str] = frozenset()
    ) -> TaskFilter | None:
        """For ``list`` and ``/events`` (selecting ``tags``): a filter, None for all; raises
        :class:`Forbidden`."""
        decision = await self.decide(action, request, tags=tags)
        if decision is True:
            return None
        if decision is False:
            raise Forbidden(f"not allowed to {action} tasks")
        return decision


def _allows(decision: Decision, task: Task) -> bool:
    if isinstance(decision, bool):
        return decision
    return bool(decision(task))


_TOKEN_IN_URL = re.compile(r"((?:^|[?&;])token=)[^&;\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every ``token=…`` query value replaced by ``[redacted]``."""
    return _TOKEN_IN_URL.sub(r"\1[redacted]", text) if "token=" in text.lower() else text


class RedactTokens(logging.Filter):
    """A logging filter that removes ``token=…`` from log lines (uvicorn's access log).

    ``logging.getLogger("uvicorn.access").addFilter(RedactTokens())``; ``sse-tasks serve``
    installs it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


__all__ = [
    "Access",
    "Action",
    "Authorizer",
    "Decision",
    "Gate",
    "RedactTokens",
    "TaskFilter",
    "TaskTokens",
    "owner_only",
    "redact",
    "tokens_only",
]
