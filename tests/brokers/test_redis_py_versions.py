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

import pytest
from _support import ROOT, worker_pythonpath

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


@pytest.mark.parametrize("major", sorted(TESTS))
def test_the_broker_works_on_the_oldest_redis_py_of_each_major_version(major: int, unmeasured: None) -> None:
    installed = ROOT / ".venv" / f"redis-py-{major}"
    if not installed.is_dir():
        pytest.skip(f"scripts/test installs redis-py {major}.0 into .venv/redis-py-{major}")
    env = {**os.environ, "PYTHONPATH": worker_pythonpath(installed)}
    version = subprocess.run(
        [sys.executable, "-c", "import redis; print(redis.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith(f"{major}."), version
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "--no-cov", "-q"),
        # (no Hypothesis, which none of these tests uses, nor the machine's speed, which
        # only the outer run reports: two seconds of CPU between them)
        *("-p", "no:hypothesispytest", "--no-machine-speed"),
        *TESTS[major],  # (-k: not the memory broker, which never imports redis-py)
    ]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout[-4000:]
