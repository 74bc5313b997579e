"""The Redis broker on the oldest redis-py its extras allow (5.0; `.[arq]` alone installs
it), as well as on the newest, which the rest of the suite runs on.

``scripts/test`` installs redis-py 5.0 into ``.venv/redis-py-5``; this test runs the
broker contract, the wire, a Redis restart and a Cluster slot that moves with that
redis-py first on the path. Each of the last two found a difference between the versions:
redis-py before 6 retries only the errors it is told to, and raises a cluster's ``MOVED``
as a plain ``ResponseError`` outside its cluster client.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _support import ROOT, worker_pythonpath

OLDEST = ROOT / ".venv" / "redis-py-5"
TESTS = [
    "tests/brokers/test_broker_contract.py",
    "tests/brokers/test_wire.py",
    "tests/brokers/test_broker_redis.py::test_streams_survive_a_redis_restart_and_catch_up",
    "tests/brokers/test_broker_redis.py::test_a_slot_moved_to_another_master_is_found_again",
]


@pytest.mark.skipif(not OLDEST.is_dir(), reason="scripts/test installs redis-py 5.0 into .venv/redis-py-5")
def test_the_broker_keeps_its_contract_on_redis_py_5(unmeasured: None) -> None:
    env = {**os.environ, "PYTHONPATH": worker_pythonpath(OLDEST)}
    version = subprocess.run(
        [sys.executable, "-c", "import redis; print(redis.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("5."), version
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "--no-cov", "-q"),
        *("-k", "not memory"),  # the memory broker never imports redis-py
        *TESTS,
    ]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout[-4000:]
