"""``sse-tasks serve`` with a setting that cannot work: one line naming the fix, exit 2.

The command runs in a real process, as the ``sse-tasks`` script runs it. A missing
extra is simulated by an import blocker in that process, so these tests do not depend
on what is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the CLI like the console script does: sys.path[0] is not the current directory
# (for ``-c`` it would be ""), and modules named in $BLOCK_IMPORTS cannot be imported.
RUN_CLI = """
import os, sys
del sys.path[0]
blocked = set(filter(None, os.environ.get("BLOCK_IMPORTS", "").split(",")))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    if name.partition(".")[0] in blocked:
        del sys.modules[name]
from sse_tasks._cli import main
main(prog_name="sse-tasks")
"""

APP = """
from sse_tasks import TaskHub

hub = TaskHub()
NOT_A_HUB = 42
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    return {**env, **extra}


def cli(
    *args: str, block: tuple[str, ...] = (), cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=clean_env(BLOCK_IMPORTS=",".join(block), **(env or {})),
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``Error: …`` line of a refused command (click's usage lines aside)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    usage = ("Usage: ", "Try '")
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(usage)]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), done.stderr
    return lines[0]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "tinyapp.py").write_text(APP)
    return tmp_path


def test_a_redis_broker_without_the_redis_package() -> None:
    for workers in ("1", "2"):
        done = cli(
            "serve",
            "--port",
            "0",
            "--broker",
            "redis://127.0.0.1:1/0",
            "--workers",
            workers,
            block=("redis",),
        )
        line = error_line(done)
        assert "redis://127.0.0.1:1/0" in line
        assert "pip install 'sse-tasks[redis]'" in line


def test_an_unknown_broker() -> None:
    line = error_line(cli("serve", "--port", "0", "--broker", "bogus://x"))
    assert "'bogus://x'" in line and "memory://" in line and "redis://" in line
    from_env = error_line(cli("serve", "--port", "0", env={"SSE_TASKS_BROKER": "bogus://y"}))
    assert "'bogus://y'" in from_env


def test_metrics_without_prometheus_client() -> None:
    line = error_line(cli("serve", "--port", "0", "--metrics", block=("prometheus_client",)))
    assert "pip install 'sse-tasks[metrics]'" in line


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module_here:hub", "no module named 'no_such_module_here'"),
        ("tinyapp:nope", "has no attribute 'nope'"),
        ("tinyapp:NOT_A_HUB", "not a TaskHub"),
        ("tinyapp", "expected module:attribute"),
    ],
)
def test_an_app_that_does_not_load(app_dir: Path, spec: str, says: str) -> None:
    line = error_line(cli("serve", "--port", "0", "--app", spec, env={"PYTHONPATH": str(app_dir)}))
    assert says in line
    assert spec in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "http"], "'--port'"),
        (["--log-level", "loud"], "'--log-level'"),
        (["--timeout-keep-alive", "-1"], "'--timeout-keep-alive'"),
    ],
)
def test_a_bad_option_value(args: list[str], says: str) -> None:
    assert says in error_line(cli("serve", *args))
