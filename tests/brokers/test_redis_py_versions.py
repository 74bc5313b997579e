"""The Redis broker on the oldest redis-py of each major version its extras allow (5.0, which
`.[arq]` alone installs; 6.0; 7.0), as well as on the newest, which the rest of the suite
runs on.

``scripts/test`` installs each into ``.venv/redis-py-N``; this test runs, with that redis-py
first on the path, the wire, a Redis restart and a Cluster slot that moves, and on 5.0 the
whole broker contract too. Each of the last two found a difference between the versions:
redis-py before 6 retries only the errors it is told to, and raises a cluster's ``MOVED``
as a plain ``ResponseError`` outside its cluster client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import ROOT, Proc, spawn, worker_pythonpath

#: What runs on each version: the whole contract and wire on the oldest; on the others,
#: what differed (a restart, a moved slot) and the wire's reads, replies and reconnects.
DIFFERED = [
    "tests/brokers/test_broker_redis.py::test_streams_survive_a_redis_restart_and_catch_up",
    "tests/brokers/test_broker_redis.py::test_a_slot_moved_to_another_master_is_found_again",
]
WIRE = "tests/brokers/test_wire.py"
TESTS = {
    5: ["-k", "not memory", "tests/brokers/test_broker_contract.py", WIRE, *DIFFERED],
    6: ["-k", "answered or restart or timeout or post or slot_moved", WIRE, *DIFFERED],
    7: ["-k", "answered or restart or timeout or post or slot_moved", WIRE, *DIFFERED],
}

# One process runs every version's test: the first starts the runs of all (see `runs`).
pytestmark = pytest.mark.xdist_group("redis_py_versions")


def _installed(major: int) -> Path:
    return ROOT / ".venv" / f"redis-py-{major}"


def _env(major: int) -> dict[str, str]:
    """That redis-py first on the path; unmeasured, as the ``unmeasured`` fixture leaves a
    test's processes (a module's fixture cannot use that test's fixture)."""
    unmeasured = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    env = {name: value for name, value in os.environ.items() if name not in unmeasured}
    return {**env, "PYTHONPATH": worker_pythonpath(_installed(major))}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[dict[int, Proc]]:
    """The pytest runs of every version the session selected, started together: each spends
    most of its time waiting (a cluster forming, a Redis restarting), so together they take
    little longer than the longest alone."""
    selected = sorted(
        item.callspec.params["major"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.parent is request.node
    )
    started: dict[int, Proc] = {}
    try:
        for major in selected:
            if not _installed(major).is_dir():
                continue
            command = [
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "--no-cov", "-q"),
                # (no Hypothesis, which none of these tests uses, nor the machine's speed,
                # which only the outer run reports: two seconds of CPU between them)
                *("-p", "no:hypothesispytest", "--no-machine-speed"),
                *TESTS[major],  # (-k: not the memory broker, which never imports redis-py)
            ]
            started[major] = spawn(f"redis-py {major}", command, env=_env(major), cwd=ROOT)
        yield started
    finally:
        for run in started.values():
            run.kill()  # with the redis-servers it started, were it still running
            run.log.unlink(missing_ok=True)


@pytest.mark.parametrize("major", sorted(TESTS))
def test_the_broker_works_on_the_oldest_redis_py_of_each_major_version(
    major: int, runs: dict[int, Proc]
) -> None:
    if not _installed(major).is_dir():
        pytest.skip(f"scripts/test installs redis-py {major}.0 into .venv/redis-py-{major}")
    version = subprocess.run(
        [sys.executable, "-c", "import redis; print(redis.__version__)"],
        env=_env(major),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith(f"{major}."), version
    run = runs[major]
    try:
        run.proc.wait(100)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run on redis-py {major} took over 100 s:\n{run.text()[-4000:]}")
    assert run.proc.returncode == 0, run.text()[-4000:]
