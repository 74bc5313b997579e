"""Snapshots as the broker stores them: the JSON of a task hash and a stream entry."""

from __future__ import annotations

from typing import Any

from ..._core import codec
from ..._core.models import OutputChunk, Task
from .reader import text


def data(task: Task) -> bytes:
    """The snapshot JSON a stream entry and a task hash carry (no event id or type)."""
    record = task.to_record()
    del record["event_id"], record["event_type"]
    return codec.dumps(record)


def task_of(fields: list[Any]) -> Task | None:
    """A snapshot from the hash fields ``d``, ``i``, ``t``."""
    raw, event_id, event_type = fields
    if raw is None:
        return None
    record = codec.loads(raw)
    return Task.from_record({**record, "event_id": text(event_id), "event_type": text(event_type)})


def chunks_of(rows: list[Any]) -> list[OutputChunk]:
    """A task's output chunks from its output list (``<event id> <chunk JSON>`` each)."""
    chunks = []
    for row in rows:
        event_id, _, raw = text(row).partition(" ")
        chunks.append(OutputChunk.from_record({**codec.loads(raw), "event_id": event_id}))
    return chunks
