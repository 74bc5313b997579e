"""Every benchmark scenario at its smallest scale (``--smoke``), through its command line,
so the harness cannot rot (nothing is timed). A system that is not installed is skipped
with the reason: CI installs nothing for the benchmarks beyond the ``test`` extra, so
aiohttp-sse and nchan usually are; ``python -m benchmarks`` installs them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _support import ROOT

sys.path.insert(0, str(ROOT))


from benchmarks import (
    fanout,
    harness,
    idle,
    light,
    multiprocess,
    output_fanout,
    selective,
    submit,
    systems,
    writes,
)

SMOKE = ["--smoke", "--no-pin"]


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repository, with it on ``PYTHONPATH``: its exit and output."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=harness.python_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("system", systems.SYSTEMS)
def test_the_comparison_runs(system: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks --smoke`` for one system: closed, light, fanout, throughput,
    idle, submit and latency, one server for all of them."""
    reason = systems.missing(system)
    if reason is not None:
        pytest.skip(f"{system}: {reason}")
    out = tmp_path / "results.json"
    argv = [*SMOKE, "--no-install", "--quiet-wait", "0", "--systems", system, "--json", str(out)]
    assert systems.main(systems.comparison(), argv) == 0
    report = _json(out)
    results = report["results"]
    scenarios = {s.name: s for s in systems.comparison()}
    assert list(results) == list(scenarios)
    for name, scenario in scenarios.items():
        assert (system in results[name]) == (system in scenario.systems), name
        for label, result in results[name].items():
            assert "error" not in result, (name, label, result)
    for name in ("closed", "light"):
        result = results[name][system]
        # Every subscriber gets every publish's final event, and nothing is refused.
        assert result["complete"], (name, result)
        assert result["deliveries"] == result["expected"] == result["subscribers"] * result["publishes"]
        assert result["refused"] == 0
        assert result["publishes_per_s"] > 0 and not math.isnan(result["p99_ms"])
    assert results["closed"][system]["publishes"] == fanout.CLOSED.sizes["smoke"]["publishes"]
    paced = light.LIGHT.sizes["smoke"]
    assert results["light"][system]["publishes"] == round(paced["rate"] * paced["seconds"])
    assert isinstance(results["idle"][system]["kib_per_stream_20"], float)  # too few to weigh
    if system in systems.SERVER_PUBLISHER:
        for name in ("fanout", "throughput"):
            result = results[name][system]
            assert result["complete"], (name, result)
            # sse_tasks may merge a progress report with the next one before it is
            # published, never drop one after; the peers deliver every message.
            assert 0 < result["deliveries"] <= result["expected"]
            if not system.startswith("sse_tasks"):
                assert result["deliveries"] == result["expected"]
        assert results["fanout"][system]["paced_complete"]
        assert results["latency"][system]["tasks"] == submit.LATENCY.sizes["smoke"]["tasks"]
    for label in ("sse_tasks", "sse_tasks:bare", "sse_tasks+redis", "sse-starlette"):
        if label.split(":")[0] == system:
            assert results["submit"][label]["answers_per_s"] > 0
            assert results["submit"][label]["failed"] == 0
    assert report["scale"]["closed_subscribers"] == 4 and report["skipped"] == {}
    assert len(report["targets"]) == sum(len(s.targets) for s in scenarios.values())
    table = capsys.readouterr().out
    for name in scenarios:
        assert f"== {name}" in table
    assert "== targets" in table


def test_targets_without_peers_are_not_measured(capsys: pytest.CaptureFixture[str]) -> None:
    """A run without nchan or aiohttp-sse reports those targets as not measured, not met;
    a target whose run did not complete is not met, whatever its ratio."""
    results = {
        "closed": {
            "sse_tasks": {"publishes_per_s": 100.0, "subscribers": 4, "complete": True},
            "sse_tasks+redis": {"publishes_per_s": 90.0, "subscribers": 4, "complete": False},
        },
        "light": {"sse_tasks": {"p99_ms": 2.0, "server_cpu_pct": 10.0, "complete": True}},
        "submit": {"sse_tasks": {"answers_per_s": 50.0}, "sse_tasks:bare": {"answers_per_s": 100.0}},
        "idle": {"sse_tasks": {"kib_per_stream_20": 13.0, "kib_per_stream_10": 1.0}},
    }
    found = {t["target"]: t for t in systems.targets(systems.comparison(), results)}
    idle_target = found["idle stream ≤ 12 KiB (at 20 streams)"]  # the largest count
    assert idle_target["met"] is False and idle_target["value"] == 13.0
    assert found["closed-loop fan-out (4 subscribers) ≥ 1.0x nchan publishes/s"]["met"] is None
    assert found["light-load p99 ≤ aiohttp-sse's"]["met"] is None
    redis = found["redis closed-loop fan-out publishes/s ≥ 0.7x memory"]
    assert redis["value"] == 0.9 and redis["met"] is False and redis["incomplete"] == ["sse_tasks+redis"]
    bare = found["submit ≥ 0.7x a bare Starlette endpoint (same server)"]
    assert bare["met"] is False and bare["value"] == 0.5
    assert not any(name.startswith(("redis burst", "redis throughput")) for name in found)  # not run
    systems.print_targets(list(found.values()))
    assert "not measured" in capsys.readouterr().out


def test_selective_streams_run(tmp_path: Path) -> None:
    """``python -m benchmarks.selective --smoke``: idle ``?task=`` streams on a busy hub, the curve."""
    out = tmp_path / "selective.json"
    assert selective.main([*SMOKE, "--json", str(out)]) == 0
    report = _json(out)
    size = selective.SIZES["smoke"]
    assert [r["idle_streams"] for r in report["selective"]] == size.idle
    for result in report["selective"]:
        assert 0 < result["delivered"] <= size.messages and result["wakeups"] >= 1
    (point,) = report["curve"]
    assert point["complete"] and 0 < point["deliveries"] <= point["expected"]
    assert point["expected"] == size.fanout[0] * size.fanout_messages


@pytest.mark.parametrize("system", ["sse_tasks", "sse_tasks+redis"])
def test_output_fanout_runs(system: str, tmp_path: Path) -> None:
    """``python -m benchmarks.output_fanout --smoke``: every follower gets every chunk, in order."""
    reason = systems.missing(system)
    if reason is not None:
        pytest.skip(f"{system}: {reason}")
    out = tmp_path / "output.json"
    assert output_fanout.main([*SMOKE, "--json", str(out), *(["--redis"] if "redis" in system else [])]) == 0
    report = _json(out)
    assert (report["system"], report["words"], report["followers"]) == (system, 50, 2)
    assert report["words_delivered_per_s"] > 0 and report["server_peak_rss_mib"] > 0


def test_multiprocess_output_runs(tmp_path: Path) -> None:
    """``python -m benchmarks.multiprocess --smoke --cluster``: memory, and three processes
    on Redis and on a three-master Redis Cluster; every follower gets every chunk of every
    task, in order, and each ratio is reported."""
    reason = systems.missing("sse_tasks+redis")
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "multiprocess.json"
    assert multiprocess.main([*SMOKE, "--quiet-wait", "0", "--cluster", "--json", str(out)]) == 0
    report = _json(out)
    tasks, words, followers = multiprocess.SIZES["smoke"]
    for system in ("memory", "redis", "cluster"):
        result = report["results"][system]
        assert result["chunks"] == tasks * (words + words // 10)
        assert result["tasks_complete"] == tasks and result["tasks_failed"] == 0
        assert result["followers"] == followers and result["wall_s"] > 0
    for system in ("redis", "cluster"):
        assert report["results"][system]["processes"] == 3
        assert set(report["ratios"][system]) >= {"wall_s", "producer_cpu_us_per_chunk", "idle_of_producer"}


def test_broker_writes_run(tmp_path: Path) -> None:
    """``python -m benchmarks.writes --smoke``: memory and a real redis-server, alternately."""
    if harness.redis_server() is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "writes.json"
    assert writes.main(["--smoke", "--no-pin", "--repeat", "2", "--json", str(out)]) == 0
    report = _json(out)
    assert [len(report["runs"][name]) for name in ("memory", "redis")] == [2, 2]
    assert report["medians"]["redis"] > 0 and report["ratio"] > 0


def test_a_process_that_reserved_ports_exits_without_a_resource_warning() -> None:
    """``benchmarks.ports`` holds a lock file per port for the process's life: it closes them
    at exit, or every process of the suite would print a warning for each."""
    code = "from benchmarks.ports import free_port; free_port(); free_port(also=10000)"
    done = _python("-X", "dev", "-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ResourceWarning" not in done.stderr, done.stderr[-2000:]


def test_idle_memory_breakdown_runs() -> None:
    """``python -m benchmarks.idle tracemalloc --smoke``, in a process of its own (tracemalloc)."""
    done = _python("-m", "benchmarks.idle", "tracemalloc", "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "20 idle streams (after 5 warm-up):" in done.stdout and "by line" in done.stdout


def test_the_celery_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks.celery_tasks --smoke``: real workers, a real redis-server,
    sending to its own Redis whatever ``$CELERY_BROKER_URL`` says (Celery prefers it to
    ``broker=``; the Celery tests set it in this process)."""
    pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[test]')")
    if harness.redis_server() is None:
        pytest.skip("redis-server is not installed")
    from benchmarks import celery_tasks

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there

    out = tmp_path / "celery.json"
    assert celery_tasks.main([*SMOKE, "--quiet-wait", "0", "--json", str(out)]) == 0
    report = _json(out)
    scale = celery_tasks.SCALES["smoke"]
    for pool in scale.pools:
        runs = report["throughput"][pool]["runs"]
        assert [r["hooks"] for r in runs] == [False, True] * scale.repeat  # alternately
        assert all(r["tasks"] == scale.tasks and r["tasks_per_s"] > 0 for r in runs)
    latency = report["latency"]
    assert latency["tasks"] == scale.latency_tasks
    assert latency["deliveries"] == scale.latency_tasks * scale.followers
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]


@pytest.mark.parametrize("module", [fanout, light, idle, submit, selective, output_fanout, writes, harness])
def test_every_scenario_has_a_command_line(module: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert f"python -m {module.__name__}" in capsys.readouterr().out


def test_python_m_benchmarks_runs() -> None:
    done = _python("-m", "benchmarks", "--help")
    assert done.returncode == 0, done.stderr
    assert "closed,light,fanout,throughput,idle,submit,latency" in done.stdout


def test_the_dashboard_benchmark_runs(tmp_path: Path) -> None:
    """``python -m benchmarks.dashboard --smoke``: the page in Chromium, timed at a tiny scale."""
    pytest.importorskip("_browser")  # skips without Playwright or Chromium
    out = tmp_path / "dashboard.json"
    done = _python("-m", "benchmarks.dashboard", "--smoke", "--json", str(out), timeout=180)
    assert done.returncode == 0, done.stderr
    result = _json(out)
    assert result["history"] == 30 and result["rendered_rows"] > 0
    assert 0 < result["busy_share"] < 1 and result["first_paint_ms"] > 0


@pytest.mark.parametrize(
    ("engine", "redis_on"),
    [("arq", "worker"), ("dramatiq", "client"), ("huey", "worker"), ("rq", "client"), ("taskiq", "worker")],
)
def test_the_engines_benchmark_runs(engine: str, redis_on: str, tmp_path: Path) -> None:
    """``python -m benchmarks.engines ENGINE --smoke``: a real worker of the engine with and
    without the hook, a real redis-server (on the worker's CPU or the sender's), a hub and
    its followers."""
    pytest.importorskip(engine, reason=f"{engine} is not installed (pip install -e '.[test]')")
    if harness.redis_server() is None:
        pytest.skip("redis-server is not installed")
    from benchmarks import engines

    out = tmp_path / "engines.json"
    # One kind of work (each run starts a fresh worker): the harness, not the numbers.
    argv = [engine, *SMOKE, "--quiet-wait", "0", "--work-ms", "1", "--redis-on", redis_on, "--json", str(out)]
    assert engines.main(argv) == 0
    report = _json(out)
    assert report["redis_on"] == redis_on
    scale = harness.ENGINE_SCALES["smoke"]
    found = report["engines"][engine]
    assert list(found["throughput"]) == ["1ms"]
    for throughput in found["throughput"].values():
        assert [r["hooks"] for r in throughput["runs"]] == [False, True] * scale.repeat
        assert all(r["tasks"] == scale.tasks and r["tasks_per_s"] > 0 for r in throughput["runs"])
        assert all(r["redis_cpu_ms_per_task"] >= 0 for r in throughput["runs"])
    latency = found["latency"]
    assert latency["deliveries"] == scale.latency_tasks * scale.followers
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
