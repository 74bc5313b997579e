"""The hub's counters (:class:`~sse_tasks._core.stats.HubStats`) in Prometheus form at ``/metrics``.

``prometheus-client`` (the ``metrics`` extra) is imported when ``/metrics`` is
enabled and reads the numbers at scrape time, so nothing Prometheus-related sits on
the hot path and each hub has its own registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._core.stats import DURATION_BUCKETS

if TYPE_CHECKING:
    from .backend import TaskBackend
    from .sse import StreamMonitor


class _Collector:
    """A prometheus-client custom collector reading one hub at scrape time."""

    def __init__(self, runner: TaskBackend, monitor: StreamMonitor) -> None:
        self.runner = runner
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        runner, stats = self.runner, self.runner.stats
        tasks = CounterMetricFamily(
            "sse_tasks_tasks", "Tasks this process moved into each state.", labels=["state"]
        )
        for state, value in sorted(stats.tasks.items()):
            tasks.add_metric([state], value)
        yield tasks
        active = GaugeMetricFamily(
            "sse_tasks_tasks_active", "Tasks queued or running in this process.", labels=["state"]
        )
        active.add_metric(["queued"], runner.queued)
        active.add_metric(["running"], runner.running)
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
        yield GaugeMetricFamily("sse_tasks_open_streams", "Open SSE streams.", value=len(self.monitor))
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


class Metrics:
    """One hub's metrics registry: :meth:`render` is the body of ``GET /metrics``.

    Raises ``RuntimeError`` without the ``metrics`` extra (prometheus-client).
    """

    def __init__(self, runner: TaskBackend, monitor: StreamMonitor) -> None:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError(
                "/metrics needs the metrics extra: pip install 'sse-tasks[metrics]',"
                f" or '.[metrics]' in a checkout ({exc})"
            ) from exc
        self.content_type: str = CONTENT_TYPE_LATEST
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(runner, monitor))

    def render(self) -> bytes:
        """Every metric, read now, in the Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
