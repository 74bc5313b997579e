"""Counters a hub keeps: plain ints, always on, read by ``/metrics`` and tests."""

from __future__ import annotations

import bisect
import math
from collections import Counter

#: Upper bounds (seconds) of the task duration histogram's buckets.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf)


class Histogram:
    """Bucket counts (not cumulative), sum and count of observed values."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1


class HubStats:
    """What one hub has done in this process, for ``/metrics`` and tests."""

    def __init__(self) -> None:
        #: Tasks this process moved into each state (``queued`` … ``cancelled``).
        self.tasks: Counter[str] = Counter()
        #: Run time of finished tasks by ``(name, state)``.
        self.durations: dict[tuple[str, str], Histogram] = {}
        #: Events appended to this process's log, by type (with Redis: every worker's).
        self.events_published: Counter[str] = Counter()
        #: Event frames written to SSE clients (``reset`` frames included).
        self.events_delivered = 0
        #: ``event: reset`` frames sent (a client resynced from snapshots).
        self.resets_sent = 0
        #: Progress events dropped because a later one of the same task superseded them.
        self.progress_coalesced = 0
        #: Error answers by code (``not_found``, ``queue_full``, ``forbidden``, …).
        self.rejected: Counter[str] = Counter()
        #: Requests the authorization hook refused for one task (answered 404 or 403).
        self.denied = 0

    def observe_duration(self, name: str, state: str, seconds: float) -> None:
        histogram = self.durations.get((name, state))
        if histogram is None:
            histogram = self.durations[(name, state)] = Histogram()
        histogram.observe(seconds)

    def count_frames(self, chunk: bytes) -> None:
        """Count the event frames in an SSE chunk about to be sent.

        Every frame has exactly one ``data:`` line and JSON escapes newlines, so a
        payload cannot forge either pattern.
        """
        self.events_delivered += chunk.count(b"\ndata: ")
        if b"event: reset\n" in chunk:
            self.resets_sent += chunk.count(b"event: reset\n")
