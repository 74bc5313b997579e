"""Reading the text of an SSE stream into events, within a bound (pure data, no I/O).

A stream never ends by itself, so a reader that keeps a line until it ends would hold
without end what a broken or hostile server sends without a line break. An
:class:`EventReader` splits the text into lines as the SSE specification does (CRLF, LF
or CR, one leading byte order mark skipped), decodes their fields as httpx-sse does
(an event is dispatched at a blank line if any of its fields was given; the last event
id carries over), but takes ``retry`` only as ASCII digits, as the specification says,
and raises :class:`EventTooLarge` once the event being read, its lines together, is
longer than ``max_size`` characters. Comment lines (heartbeats) are bounded one by one
and never kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from .following import MalformedAnswer

__all__ = ["Event", "EventReader", "EventTooLarge"]

_BREAK = re.compile(r"\r\n|\r|\n")


class Event(NamedTuple):
    """One dispatched event: its type (``message`` if none was given), data, the last
    event id so far and its ``retry`` (None if none was given)."""

    event: str
    data: str
    id: str
    retry: int | None


class EventTooLarge(MalformedAnswer):
    """An event (or a line) of the stream is longer than the reader's bound."""


class _Text:
    """Text written in pieces, held as few objects: a server sending a character at a
    time would otherwise have each kept as an object of its own, dozens of bytes apiece
    (``io.StringIO`` keeps up to 100,000 such pieces before it joins them)."""

    JOIN_EVERY = 64

    def __init__(self) -> None:
        self._joined: list[str] = []
        self._pieces: list[str] = []
        self.size = 0

    def write(self, piece: str) -> None:
        self._pieces.append(piece)
        self.size += len(piece)
        if len(self._pieces) >= self.JOIN_EVERY:
            self._joined.append("".join(self._pieces))
            self._pieces.clear()

    def value(self) -> str:
        return "".join(self._joined) + "".join(self._pieces)


class EventReader:
    """Feed it the stream's text as it comes; it yields the events that text completes
    (each before a later line of the same text can raise)."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._partial = _Text()  # the line not ended yet
        self._size = 0  # characters of the event's lines read so far
        self._started = False
        self._after_cr = False  # the last text ended with CR: a LF first in the next is its pair
        self._event = ""
        self._data = _Text()  # each data line, then LF
        self._id = ""
        self._retry: int | None = None

    def feed(self, text: str) -> Iterator[Event]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            self._after_cr = False
            text = text.removeprefix("\n")
        start = 0
        for end in _BREAK.finditer(text):
            line = self._ended(text[start : end.start()])
            start = end.end()
            event = self._line(line)
            if event is not None:
                yield event
        rest = text[start:]
        if rest:
            self._add(rest)
        elif text.endswith("\r"):
            self._after_cr = True

    def _add(self, piece: str) -> None:
        self._check(self._size + self._partial.size + len(piece))
        self._partial.write(piece)

    def _ended(self, last: str) -> str:
        """The line whose last piece is ``last``."""
        if not self._partial.size:
            self._check(self._size + len(last))
            return last
        self._add(last)
        line = self._partial.value()
        self._partial = _Text()
        return line

    def _check(self, size: int) -> None:
        if size > self.max_size:
            raise EventTooLarge(
                f"the stream sent an event longer than {self.max_size} characters "
                "(max_event_size): it is not one the HTTP contract describes"
            )

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: read, not kept
        self._size += len(line)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.write(value)
            self._data.write("\n")
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self._size = 0
        if not (self._event or self._data.size or self._id or self._retry is not None):
            return None
        data = self._data.value()[:-1]
        event = Event(self._event or "message", data, self._id, self._retry)
        self._event, self._data, self._retry = "", _Text(), None  # the id carries over
        return event
