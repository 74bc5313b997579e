"""Snapshots as the broker stores them: the JSON of a task hash and a stream entry."""

from __future__ import annotations

from typing import Any

from ..._core import codec
from ..._core.models import MAX_RESULT_BYTES, OutputChunk, Task, check_result_size

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


def task_of(fields: list[Any]) -> Task | None:
    """A snapshot from the hash fields ``d``, ``i``, ``t``."""
    raw, event_id, event_type = fields
    if raw is None:
        return None
    record = codec.loads(raw)
    return Task.from_record({**record, "event_id": text(event_id), "event_type": text(event_type)})


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
