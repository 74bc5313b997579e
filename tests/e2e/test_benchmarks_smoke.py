"""Every benchmark scenario at a tiny scale, for every system installed here, so the
harness cannot rot (nothing is timed). A system that is not installed is skipped with
the reason: CI installs nothing for the benchmarks beyond the ``test`` extra, so
aiohttp-sse and nchan usually are; ``python -m benchmarks`` installs them."""

from __future__ import annotations

import asyncio
import math
import sys

import pytest
from _support import ROOT

sys.path.insert(0, str(ROOT))


from benchmarks import run, systems


@pytest.mark.parametrize("system", systems.SYSTEMS)
def test_every_scenario_runs(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    reason = systems.missing(system)
    if reason is not None:
        pytest.skip(f"{system}: {reason}")
    results = asyncio.run(run.run_all(run.SMOKE, pin=False, systems=(system,)))
    assert set(results) == set(run.SCENARIOS)
    ours = system.startswith("sse_tasks")
    for scenario in run.SCENARIOS:
        applies = system in run.SCENARIO_SYSTEMS[scenario]
        assert (system in results[scenario]) == applies, scenario
        for label, result in results[scenario].items():
            assert "error" not in result, (scenario, label, result)
    for scenario in ("closed", "light"):
        result = results[scenario][system]
        # Every subscriber gets every publish's final event, and nothing is refused.
        assert result["complete"], (scenario, result)
        assert result["deliveries"] == result["expected"] == result["subscribers"] * result["publishes"]
        assert result["refused"] == 0
        assert result["publishes_per_s"] > 0 and not math.isnan(result["p99_ms"])
    assert results["closed"][system]["publishes"] == run.SMOKE.closed_publishes
    assert results["light"][system]["publishes"] == round(run.SMOKE.light_rate * run.SMOKE.light_seconds)
    assert isinstance(results["idle"][system]["kib_per_stream_20"], float)  # too few to weigh
    if system in run.SERVER_PUBLISHER:
        for scenario in ("fanout", "throughput"):
            result = results[scenario][system]
            assert result["complete"], (scenario, result)
            # sse_tasks may merge a progress report with the next one before it is
            # published, never drop one after; the peers deliver every message.
            assert 0 < result["deliveries"] <= result["expected"]
            if not ours:
                assert result["deliveries"] == result["expected"]
        assert results["fanout"][system]["paced_complete"]
        assert results["latency"][system]["tasks"] == run.SMOKE.latency_tasks
    for label in ("sse_tasks", "sse_tasks:bare", "sse_tasks+redis", "sse-starlette"):
        if label.split(":")[0] == system:
            assert results["submit"][label]["answers_per_s"] > 0
            assert results["submit"][label]["failed"] == 0
    table = capsys.readouterr().out
    for scenario in run.SCENARIOS:
        assert f"== {scenario}" in table


def test_targets_without_peers_are_not_measured() -> None:
    """A run without nchan or aiohttp-sse reports those targets as not measured, not met."""
    results = {
        "closed": {"sse_tasks": {"publishes_per_s": 100.0, "subscribers": 4, "complete": True}},
        "light": {"sse_tasks": {"p99_ms": 2.0, "server_cpu_pct": 10.0, "complete": True}},
        "submit": {"sse_tasks": {"answers_per_s": 50.0}, "sse_tasks:bare": {"answers_per_s": 100.0}},
        "idle": {"sse_tasks": {"kib_per_stream_10": 1.0, "kib_per_stream_20": 2.0}},
    }
    found = {t["target"].split(" (")[0]: t for t in run.targets(results)}
    assert found["idle stream ≤ 12 KiB"]["met"] is True
    assert found["closed-loop fan-out"]["met"] is None
    assert found["light-load p99 ≤ aiohttp-sse's"]["met"] is None
    submit = found["submit ≥ 0.7x a bare Starlette endpoint"]
    assert submit["met"] is False and submit["value"] == 0.5
    run.print_targets(run.targets(results))


def test_the_celery_benchmark_runs() -> None:
    """``python -m benchmarks.celery_tasks`` at a tiny scale: real workers, a real redis-server
    (about 6 s; nothing timed)."""
    pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[test]')")
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from benchmarks import celery_tasks

    scale = celery_tasks.SMOKE
    results = celery_tasks.run(scale, pin=False)
    for pool in scale.pools:
        runs = results["throughput"][pool]["runs"]
        assert [r["hooks"] for r in runs] == [False, True] * scale.repeat  # alternately
        assert all(r["tasks"] == scale.tasks and r["tasks_per_s"] > 0 for r in runs)
    latency = results["latency"]
    assert latency["tasks"] == scale.latency_tasks
    assert latency["deliveries"] == scale.latency_tasks * scale.followers
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    celery_tasks.print_table(results)
