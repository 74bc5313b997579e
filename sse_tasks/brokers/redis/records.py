"""Snapshots as the broker stores them: the JSON of a task hash and a stream entry."""

from __future__ import annotations

import logging
from typing import Any

from ..._core import codec
from ..._core.models import MAX_RESULT_BYTES, OutputChunk, Task, check_result_size

logger = logging.getLogger("sse_tasks.redis")

#: The fields of a snapshot that may hold a float (any JSON); the others are text,
#: integers, None or lists of text.
_FREE = ("progress", "result", "error", "metadata")


def data(task: Task) -> bytes:
    """The snapshot JSON a stream entry and a task hash carry (no event id or type).
    Raises :class:`~sse_tasks._core.models.ResultTooLarge` for a result over the bound."""
    record = task.to_record()
    del record["event_id"], record["event_type"]
    encoded = codec.dumps_record(record, _FREE)
    if len(encoded) > MAX_RESULT_BYTES and task.result is not None:
        check_result_size(task.result)  # (only a snapshot that long can hold a result too long)
    return encoded


class MalformedRecord(ValueError):
    """A task record the broker did not write: another program's, or damaged."""


def task_of(fields: Any) -> Task | None:
    """A snapshot from the hash fields ``d``, ``i``, ``t``; None if none is stored.
    Raises :class:`MalformedRecord` for a record that is not one (Redis's own error
    reply for a key that is not a hash included)."""
    if isinstance(fields, Exception):  # a pipeline's reply: WRONGTYPE, say
        raise MalformedRecord(f"a task key that is not a task record ({fields})")
    raw, event_id, event_type = fields
    if raw is None:
        return None
    try:
        record = codec.loads(raw)
        return Task.from_record({**record, "event_id": text(event_id), "event_type": text(event_type)})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedRecord(f"a task record that is not a snapshot ({type(exc).__name__}: {exc})") from None


def task_or_none(fields: Any, task_id: str, warned: set[str]) -> Task | None:
    """:func:`task_of`, with a record that is not a snapshot taken as no task: warned
    about once per id (up to 1,000 ids in ``warned``), never an error for its reader."""
    try:
        return task_of(fields)
    except MalformedRecord as exc:
        if task_id not in warned:
            if len(warned) >= 1000:
                warned.clear()
            warned.add(task_id)
            logger.warning("task %r: %s; taken as no task", task_id[:200], exc)
        return None


def chunks_of(reply: list[Any]) -> list[OutputChunk]:
    """A task's output chunks from ``chunks.lua``'s reply: the epoch and the entries of
    its output stream (``c``: the chunk's JSON), each numbered with its event id."""
    raw_epoch, entries = reply
    epoch = text(raw_epoch)
    chunks = []
    for stream_id, flat in entries:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        raw = fields[b"c"] if b"c" in fields else fields["c"]
        chunks.append(
            OutputChunk.from_record({**codec.loads_record(raw), "event_id": f"{epoch}-{text(stream_id)}"})
        )
    return chunks


def text(value: Any) -> str:
    """``value`` as ``str`` (Redis answers bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
