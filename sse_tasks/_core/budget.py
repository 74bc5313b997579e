"""The per-task bound on output: chunks numbered in order, one warning once it is full."""

from __future__ import annotations

from .models import OutputChunk


class OutputBudget:
    """Numbers a task's output chunks and keeps them within ``max_bytes`` and ``max_chunks``.

    The chunk that would go beyond either becomes one ``warning`` log chunk saying so;
    everything after it is dropped. Not thread-safe: callers hold their own lock.
    """

    def __init__(self, task_id: str, max_bytes: int, max_chunks: int) -> None:
        self.task_id = task_id
        self.max_bytes = max_bytes
        self.max_chunks = max_chunks
        self.chunks = 0  # chunks kept (numbered 0 on), the warning included
        self._bytes = 0
        self.full = False

    def take(self, kind: str, text: str, level: str | None) -> OutputChunk | None:
        """The chunk to publish for this piece of output, or None once the budget is spent."""
        if self.full:
            return None
        size = len(text.encode())
        if self.chunks >= self.max_chunks or self._bytes + size > self.max_bytes:
            self.full = True
            limits = f"{self.max_chunks} chunks or {self.max_bytes} bytes"
            text = f"output limit reached ({limits}): further output is not kept"
            kind, level = "log", "warning"
        else:
            self._bytes += size
        chunk = OutputChunk(self.task_id, self.chunks, kind, text, level)
        self.chunks += 1
        return chunk
