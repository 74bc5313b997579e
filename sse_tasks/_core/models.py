"""Task snapshots, states and events, and their JSON and SSE encodings."""

from __future__ import annotations

import enum
import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from . import codec


class TaskState(str, enum.Enum):
    """Lifecycle of a task: ``queued`` → ``running`` → one terminal state."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``: these never change again."""
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


#: The states a task never leaves.
TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

#: Longest task id the API looks up (ids are 16 URL-safe characters; tokens allow 128).
MAX_TASK_ID_LENGTH = 128
#: What a task id may not hold: control characters (a line break would start a new line
#: in an SSE field, a log line or a CSS selector) and halves of surrogate pairs (not text).
_NOT_IN_TASK_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def valid_task_id(task_id: object) -> bool:
    """An id a task may have: text of 1 to :data:`MAX_TASK_ID_LENGTH` characters, no
    control character and no lone surrogate. An engine's hook reports only work whose
    engine-given id is one (the engines' own ids always are)."""
    return (
        isinstance(task_id, str)
        and 0 < len(task_id) <= MAX_TASK_ID_LENGTH
        and _NOT_IN_TASK_ID.search(task_id) is None
    )


#: Longest ``Last-Event-ID`` the API parses.
MAX_EVENT_ID_LENGTH = 256

#: The SSE event type that tells a client to drop what it holds and resync.
RESET_EVENT = "reset"

#: Tags a task may carry, and the longest tag.
MAX_TAGS = 16
MAX_TAG_LENGTH = 64
#: A tag: 1-64 letters, digits and ``:_-./@`` (safe in a URL, a header and HTML).
TAG_PATTERN = r"^[A-Za-z0-9:_\-./@]{1,64}$"
_TAG = re.compile(r"[A-Za-z0-9:_\-./@]{1,64}")
#: The default bound of a task's encoded metadata (``TaskHub(max_metadata_bytes=…)``).
MAX_METADATA_BYTES = 4096
#: The bound of a task's result, encoded: every snapshot and final event carries it, so a
#: task with more to hand back stores it elsewhere and returns where it is.
MAX_RESULT_BYTES = 1 << 20


class ResultTooLarge(ValueError):
    """A task's result is more than :data:`MAX_RESULT_BYTES` encoded."""


def check_result_size(result: Any) -> None:
    """Raise :class:`ResultTooLarge` if ``result`` (JSON) encodes to more than
    :data:`MAX_RESULT_BYTES`."""
    size = len(codec.dumps(result))
    if size > MAX_RESULT_BYTES:
        raise ResultTooLarge(f"it is {size:,} bytes encoded, more than the {MAX_RESULT_BYTES:,} allowed")


def check_tag(tag: object) -> str:
    """``tag`` if it is a valid tag; ``ValueError`` saying why not."""
    if not isinstance(tag, str) or _TAG.fullmatch(tag) is None:
        raise ValueError(f"a tag is 1-{MAX_TAG_LENGTH} letters, digits and ':_-./@', not {str(tag)[:80]!r}")
    return tag


def check_tags(tags: Iterable[object] | None) -> tuple[str, ...]:
    """The valid, de-duplicated tags in their order; ``ValueError`` for a bad one or too many."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise ValueError("tags must be a list of strings")
    checked = tuple(dict.fromkeys(check_tag(tag) for tag in tags))
    if len(checked) > MAX_TAGS:
        raise ValueError(f"a task carries at most {MAX_TAGS} tags")
    return checked


def check_metadata(metadata: Mapping[str, Any], max_bytes: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """``metadata`` as plain JSON (a copy), or ``ValueError`` if it is not a JSON object
    with string keys, not strict JSON (NaN, a lone surrogate, too deep) or larger than
    ``max_bytes`` encoded."""
    if not isinstance(metadata, Mapping) or not all(isinstance(key, str) for key in metadata):
        raise ValueError("metadata must be a JSON object with string keys")
    try:
        encoded = codec.dumps(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not JSON: {exc}") from None
    if len(encoded) > max_bytes:
        raise ValueError(f"metadata is {len(encoded)} bytes encoded, more than the {max_bytes} allowed")
    decoded: dict[str, Any] = codec.loads(encoded)
    return decoded


def task_path(task_id: str, root_path: str = "") -> str:
    """The task's URL path under the hub's mount point (its ``links.self``)."""
    return f"{root_path}/tasks/{task_id}"


def utcnow() -> str:
    """The current UTC time in the snapshot's ISO 8601 form (microseconds, ``Z``)."""
    # Three per task: datetime.now().strftime() was 7 % of the server's CPU in the
    # submit benchmark; the formatted second is cached, the microseconds appended.
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{_utc_second(second)}.{micro:06d}Z"


def utc_time(moment: Any) -> str | None:
    """``moment`` in the snapshot's ISO 8601 form (UTC, microseconds, ``Z``): a
    ``datetime`` (naive: UTC) or an ISO 8601 string, such as a time an engine's message
    carries; None for anything else (the caller takes another time)."""
    if isinstance(moment, str):
        if len(moment) > 40:
            return None
        if moment.endswith("Z"):  # Python 3.10's fromisoformat reads only "+00:00"
            moment = moment[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return None
    if not isinstance(moment, datetime):
        return None
    when: datetime = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    try:
        utc = when.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # beyond the years a datetime holds, once in UTC
        return None
    if utc.year < 1000:  # strftime would not pad the year to four digits
        return None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


@dataclass(frozen=True, slots=True)
class Task:
    """One run of a task function, as every client sees it.

    ``event_id`` and ``event_type`` name the last event applied to this snapshot;
    they are set by the broker when the snapshot is stored. ``owner`` is who submitted
    it (for the authorization hook); it is stored but never part of the public JSON.
    """

    id: str
    name: str
    state: TaskState = TaskState.QUEUED
    progress: float | None = None
    message: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    created_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    owner: str | None = None
    output_chunks: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def evolve(self, **changes: Any) -> Task:
        """A copy with ``changes`` applied (snapshots are immutable)."""
        # Neither dataclasses.replace() nor Task(**values): a frozen dataclass's __init__
        # sets each field through object.__setattr__. Copying the slots is about half as
        # dear, and a task's events make several copies (half the CPU of
        # MemoryBroker.publish, and a tenth of an engine hook's, when profiled).
        copy: Task = _new_object(Task)
        for slot in _SLOTS:
            slot.__set__(copy, slot.__get__(self))
        for name, value in changes.items():
            slot = _SLOT_OF.get(name)
            if slot is None:
                raise TypeError(f"Task has no field {name!r}")
            slot.__set__(copy, value)
        return copy

    def to_dict(self, root_path: str = "") -> dict[str, Any]:
        """The public JSON snapshot; links are relative to ``root_path`` (the mount point)."""
        data = self._public()
        base = task_path(self.id, root_path)
        data["links"] = {"self": base, "events": f"{base}/events", "output": f"{base}/output"}
        return data

    def _public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output_chunks": self.output_chunks,
            "metadata": self.metadata,
            "tags": list(self.tags),
        }

    def to_record(self) -> dict[str, Any]:
        """Everything a broker stores, links excluded (they depend on the mount)."""
        data = self._public()
        data["event_id"] = self.event_id
        data["event_type"] = self.event_type
        if self.owner is not None:
            data["owner"] = self.owner
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Task:
        """Inverse of :meth:`to_record`."""
        return cls(
            id=data["id"],
            name=data["name"],
            state=TaskState(data["state"]),
            progress=data.get("progress"),
            message=data.get("message"),
            result=data.get("result"),
            error=data.get("error"),
            created_at=data["created_at"],
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            event_id=data.get("event_id"),
            event_type=data.get("event_type"),
            owner=data.get("owner"),
            output_chunks=data.get("output_chunks") or 0,
            metadata=data.get("metadata") or {},
            tags=tuple(data.get("tags") or ()),
        )


_TASK_FIELDS = tuple(f.name for f in fields(Task))
#: Each field's slot (its member descriptor), which :meth:`Task.evolve` copies.
_SLOT_OF: dict[str, Any] = {name: Task.__dict__[name] for name in _TASK_FIELDS}
_SLOTS = tuple(_SLOT_OF.values())
_new_object = object.__new__

OUTPUT_EVENT = "task.output"


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """One piece of a task's output: a log line or a part of its result text.

    ``seq`` numbers a task's chunks from 0, logs and output together; ``event_id`` is
    the id of the ``task.output`` event that carried it (set when stored).
    """

    task_id: str
    seq: int
    kind: str  # "log" or "output"
    text: str
    level: str | None = None
    event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON data: ``{"id", "seq", "kind", "level"?, "text"}``."""
        data: dict[str, Any] = {"id": self.task_id, "seq": self.seq, "kind": self.kind}
        if self.level is not None:
            data["level"] = self.level
        data["text"] = self.text
        return data

    def to_record(self) -> dict[str, Any]:
        """What a broker stores: the data and the event id."""
        return {**self.to_dict(), "event_id": self.event_id}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> OutputChunk:
        return cls(
            task_id=data["id"],
            seq=data["seq"],
            kind=data["kind"],
            text=data["text"],
            level=data.get("level"),
            event_id=data.get("event_id"),
        )


class MalformedEvent(ValueError):
    """An event read from elsewhere (a broker's stream) whose snapshot or chunk cannot be
    decoded: streams skip it, as a broker skips an entry it cannot read."""


class TaskEvent:
    """One change of one task: an ordered id, a type and the full snapshot after it.

    The SSE frame is encoded once per mount point and shared by every subscriber.
    """

    __slots__ = ("_frames", "chunk", "id", "key", "position", "task", "type")

    def __init__(self, id: str, key: Any, type: str, task: Task, chunk: OutputChunk | None = None) -> None:
        self.id = id
        #: Sortable form of ``id`` (brokers decide what it is).
        self.key = key
        self.type = type
        #: The task's snapshot after this event (for ``task.output``: as of the chunk).
        self.task = task
        #: For ``task.output``: the chunk, which is the event's data.
        self.chunk = chunk
        #: In a partitioned log, the id of the log's position after this event (see
        #: :class:`~sse_tasks._core.log.PartitionedLog`): streams send it.
        self.position: str | None = None
        self._frames: dict[str, bytes] = {}

    @property
    def task_id(self) -> str:
        """The id of the event's task (a broker's event may know it without reading the snapshot)."""
        return self.task.id

    @property
    def terminal(self) -> bool:
        """True for the event that ends its task (known from the type: the snapshot is not read)."""
        return self.type in TERMINAL_EVENTS

    @property
    def state_change(self) -> bool:
        """False only for ``task.progress``: those may be coalesced, the rest never."""
        return self.type != "task.progress"

    def frame(self, root_path: str = "") -> bytes:
        """The encoded SSE frame (cached per ``root_path``)."""
        frame = self._frames.get(root_path)
        if frame is None:
            data = self.chunk.to_dict() if self.chunk is not None else self.task.to_dict(root_path)
            frame = encode_frame(self.id, self.type, data)
            self._frames[root_path] = frame
        return frame

    def stream_frame(self, root_path: str = "") -> bytes:
        """The frame a stream sends: :meth:`frame`, numbered with :attr:`position` where
        the log set one."""
        position = self.position
        if position is None:
            return self.frame(root_path)
        key = "\0" + root_path  # (no mount's path holds a NUL)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = renumbered(self.frame(root_path), position)
        return frame

    def __repr__(self) -> str:
        return f"TaskEvent(id={self.id!r}, type={self.type!r}, task={self.task.id!r})"


def encode_frame(event_id: str | None, event_type: str, data: Any) -> bytes:
    """One SSE frame. JSON escapes CR, LF and NUL, so payload text cannot forge fields."""
    return json_frame(event_id, event_type, codec.dumps(data))


def json_frame(event_id: str | None, event_type: str, data: bytes) -> bytes:
    """One SSE frame whose ``data`` is compact JSON already (it holds no CR or LF)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return b"".join((head.encode(), b"event: ", event_type.encode(), b"\ndata: ", data, b"\n\n"))


def renumbered(frame: bytes, event_id: str) -> bytes:
    """An event's ``frame`` (its ``id:`` line first) numbered ``event_id`` instead."""
    return b"id: " + event_id.encode() + frame[frame.index(b"\n") :]


def reset_frame(reason: str) -> bytes:
    """The ``event: reset`` frame sent before a resync."""
    return encode_frame(None, RESET_EVENT, {"reason": reason})


def event_type_for(state: TaskState) -> str:
    """The type of the event that moves a task into ``state`` (``task.<state>``)."""
    return f"task.{state.value}"


#: The types of the events that end a task.
TERMINAL_EVENTS = frozenset(event_type_for(state) for state in TERMINAL)
