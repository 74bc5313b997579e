"""Counters the hub keeps (plain ints, always on) and their Prometheus form at ``/metrics``.

The hub only adds to :class:`HubStats`; ``prometheus-client`` (the ``metrics`` extra)
is imported when ``/metrics`` is enabled and reads the numbers at scrape time, so
nothing Prometheus-related sits on the hot path and each hub has its own registry.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .._hub import TaskHub

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


class _Collector:
    """A prometheus-client custom collector reading one hub at scrape time."""

    def __init__(self, hub: TaskHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        hub, stats = self.hub, self.hub.stats
        tasks = CounterMetricFamily(
            "sse_tasks_tasks", "Tasks this process moved into each state.", labels=["state"]
        )
        for state, value in sorted(stats.tasks.items()):
            tasks.add_metric([state], value)
        yield tasks
        active = GaugeMetricFamily(
            "sse_tasks_tasks_active", "Tasks queued or running in this process.", labels=["state"]
        )
        active.add_metric(["queued"], hub.queued)
        active.add_metric(["running"], hub.running)
        yield active
        durations = HistogramMetricFamily(
            "sse_tasks_task_duration_seconds", "Run time of finished tasks.", labels=["name", "state"]
        )
        for (name, state), histogram in sorted(stats.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(DURATION_BUCKETS, histogram.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            durations.add_metric([name, state], buckets, histogram.sum)
        yield durations
        yield GaugeMetricFamily("sse_tasks_open_streams", "Open SSE streams.", value=hub.open_streams)
        published = CounterMetricFamily(
            "sse_tasks_events_published", "Events entering this process's event log.", labels=["type"]
        )
        for event_type, value in sorted(stats.events_published.items()):
            published.add_metric([event_type], value)
        yield published
        yield CounterMetricFamily(
            "sse_tasks_events_delivered", "Event frames written to SSE clients.", value=stats.events_delivered
        )
        yield CounterMetricFamily(
            "sse_tasks_progress_coalesced",
            "Progress events a slow stream skipped for a newer one.",
            value=stats.progress_coalesced,
        )
        yield CounterMetricFamily(
            "sse_tasks_resets_sent", "reset events sent (resyncs).", value=stats.resets_sent
        )
        rejected = CounterMetricFamily(
            "sse_tasks_rejected_requests", "Requests answered with an error, by reason.", labels=["reason"]
        )
        for reason, value in sorted(stats.rejected.items()):
            rejected.add_metric([reason], value)
        yield rejected
        yield CounterMetricFamily(
            "sse_tasks_access_denied", "Requests the authorization hook refused.", value=stats.denied
        )


def metrics_route(hub: TaskHub) -> Route:
    """``GET /metrics`` in the Prometheus text format (needs the ``metrics`` extra)."""
    from starlette.responses import Response
    from starlette.routing import Route

    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError(
            "/metrics needs the metrics extra: pip install 'sse-tasks[metrics]',"
            f" or '.[metrics]' in a checkout ({exc})"
        ) from exc
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(hub))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])
