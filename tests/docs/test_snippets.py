"""Every shell and Python snippet of README.md and docs/*.md runs as written.

One test per block, named ``file:line``; how each kind runs, what is rewritten and the
markers are in ``_snippets.py``. The tests after the parametrized one check the
checker: a wrong snippet must fail.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _snippets import (
    Block,
    Services,
    background,
    collect,
    free_port,
    parse,
    run,
    shape_mismatch,
    signature_mismatch,
    without_installs,
)
from _support import ROOT

BLOCKS = collect(ROOT)

# The snippets prove the docs run as written; the code they run is measured elsewhere.
pytestmark = pytest.mark.usefixtures("unmeasured")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real ``sse-tasks serve`` (demo tasks, ``memory://``) on a free port."""
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "sse-tasks"),
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    logs = tmp_path_factory.mktemp("demo-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_")}
    with background("sse-tasks serve (the suite's demo server)", argv, logs, env, logs / "log", port):
        yield port


@pytest.fixture
def services(request: pytest.FixtureRequest) -> Services:
    return Services(
        demo_port=lambda: int(request.getfixturevalue("demo_server")),
        redis_url=lambda: str(request.getfixturevalue("redis_url")),
    )


def document_of(block: Block) -> list[Block]:
    return [b for b in BLOCKS if b.path == block.path]


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_snippet(block: Block, tmp_path: Path, services: Services) -> None:
    run(ROOT, document_of(block), block, tmp_path, services)


def test_every_document_has_snippets() -> None:
    assert {block.path for block in BLOCKS} >= {"README.md", "docs/python-client.md", "docs/http-api.md"}
    assert not any(block.path == "CHANGELOG.md" for block in BLOCKS)


# -- the checker fails wrong snippets --------------------------------------------------------


def run_one(text: str, kind: str, tmp_path: Path, services: Services) -> None:
    block = Block("example.md", 1, kind, text)
    run(ROOT, [block], block, tmp_path, services)


def test_a_python_snippet_that_raises_fails(tmp_path: Path, services: Services) -> None:
    with pytest.raises(pytest.fail.Exception, match="exited 1"):
        run_one("from sse_tasks import TaskHub\nTaskHub(concurrency=0)\n", "python", tmp_path, services)


def test_a_request_the_server_refuses_fails_a_shell_block(tmp_path: Path, services: Services) -> None:
    with pytest.raises(pytest.fail.Exception, match="exited 22"):
        run_one("curl -s localhost:8000/tasks/no-such-task\n", "sh", tmp_path, services)


def test_a_console_block_s_output_must_have_the_shown_shape(tmp_path: Path, services: Services) -> None:
    submit = "$ curl -s -X POST localhost:8000/tasks -H 'content-type: application/json' \\\n"
    submit += '       -d \'{"name":"sleep"}\'\n'
    run_one(submit + '{"id":"Hk3…","name":"sleep","state":"queued",…}\n', "console", tmp_path / "a", services)
    with pytest.raises(pytest.fail.Exception, match="has the shape of"):
        run_one(submit + '{"id":"Hk3…","name":"count",…}\n', "console", tmp_path / "b", services)


def test_a_shown_exit_status_is_compared_exactly(tmp_path: Path, services: Services) -> None:
    run_one("$ false\n$ echo $?\n1\n", "console", tmp_path / "a", services)
    with pytest.raises(pytest.fail.Exception, match="shows"):
        run_one("$ false | cat\n$ echo $?\n1\n", "console", tmp_path / "b", services)
    with pytest.raises(pytest.fail.Exception, match="exited 1"):
        run_one("$ false\n$ echo done\n", "console", tmp_path / "c", services)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (
            ['{"id":"Hk3…","state":"running","progress":0.15,…}'],
            '{"id":"x1","state":"running","progress":1.0,"a":1}',
        ),
        (
            ["retry: 2000", "id: 3f9a-5", "event: task.progress"],
            "retry: 2000\n\nid: ab-1\nevent: task.progress\n",
        ),
        (["…", "⠋ count ━━━━╺━━  50%", "done in 0.7s"], "done in 12.25s\n"),
    ],
)
def test_shapes_that_match(expected: list[str], actual: str) -> None:
    assert shape_mismatch(expected, actual) is None


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (['{"id":"Hk3…","state":"queued"}'], '{"id":"x1","state":"running"}'),
        (["event: task.succeeded"], "event: task.failed\n"),
        (["retry: 2000", "event: task.queued"], "event: task.queued\nretry: 2000\n"),  # order
        (["step 3 of 20"], "step three of 20\n"),
    ],
)
def test_shapes_that_do_not_match(expected: list[str], actual: str) -> None:
    assert shape_mismatch(expected, actual) is not None


def test_a_signature_that_drifted_is_found() -> None:
    assert signature_mismatch("TaskHub(broker=None)", "sse_tasks.TaskHub") is not None
    assert signature_mismatch("current_task()", "sse_tasks.current_task") is None


def test_install_commands_become_no_ops_only_for_what_is_installed() -> None:
    assert without_installs("pip install '.[examples]' && uvicorn app:app").startswith(": pip install")
    assert without_installs("python3 -m venv .venv") == ": python3 -m venv .venv"
    with pytest.raises(ValueError, match="no extra"):
        without_installs("pip install '.[no-such-extra]'")
    with pytest.raises(pytest.skip.Exception, match="would install"):
        without_installs("pip install no-such-distribution-here")


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- skip-test: -->\n```sh\ntrue\n```\n", "needs a reason"),
        ("<!-- test: frobnicate -->\n```python\npass\n```\n", "unknown test marker"),
        ("<!-- test: continues -->\n```sh\ntrue\n```\n", "unknown test marker"),
        ("<!-- skip-test: why -->\n\n```sh\ntrue\n```\n", "right before a fence"),
        ("<!-- skip-test: why -->\n```nginx\nserver {}\n```\n", "not run"),
    ],
)
def test_malformed_markers_are_refused(markdown: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse("example.md", markdown)


def test_markers_and_tags() -> None:
    blocks = parse(
        "example.md",
        "<!-- skip-test: a placeholder -->\n```sh\ncurl <host>\n```\n\n```js\nx\n```\n\n"
        "<!-- test: file app.py -->\n```py\napp = 1\n```\n\n```console\n$ true\n```\n",
    )
    assert [(b.line, b.kind, b.skip, b.markers) for b in blocks] == [
        (2, "shell", "a placeholder", ()),
        (11, "python", None, ("file app.py",)),
        (15, "console", None, ()),
    ]
    assert blocks[1].marker("file") == "app.py"
    assert blocks[1].marker("continues") is None
