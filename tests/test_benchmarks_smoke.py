"""Every benchmark scenario at a tiny scale, so the harness cannot rot (nothing is timed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run


def test_every_scenario_runs_against_both_apps(capsys: pytest.CaptureFixture[str]) -> None:
    results = asyncio.run(run.run_all(run.SMOKE, pin=False))
    assert set(results) == set(run.SCENARIOS)
    for scenario in ("fanout", "throughput"):
        for app in ("baseline", "sse_tasks"):
            result = results[scenario][app]
            assert result["complete"], (scenario, app, result)
            # Every message reaches every subscriber; sse_tasks may merge a progress
            # report with the next one before it is published, never drop one after.
            assert 0 < result["deliveries"] <= result["expected"]
            if app == "baseline":
                assert result["deliveries"] == result["expected"]
    assert results["fanout"]["sse_tasks"]["paced_complete"]
    for app in ("baseline", "sse_tasks"):
        assert isinstance(results["idle"][app]["kib_per_stream_20"], float)  # too few to weigh
        assert results["latency"][app]["tasks"] == run.SMOKE.latency_tasks
    for label in ("baseline", "sse_tasks", "sse_tasks:bare"):
        assert results["submit"][label]["answers_per_s"] > 0
        assert results["submit"][label]["failed"] == 0
    table = capsys.readouterr().out
    for scenario in run.SCENARIOS:
        assert f"== {scenario}" in table
