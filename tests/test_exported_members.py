"""Everything public is exported from ``sse_tasks`` and documented."""

import subprocess
import sys

import pytest

import sse_tasks


def test_all_exports_exist_and_have_docstrings() -> None:
    assert sorted(sse_tasks.__all__) == sorted(set(sse_tasks.__all__))
    for name in sse_tasks.__all__:
        member = getattr(sse_tasks, name)
        assert member.__doc__, f"{name} has no docstring"


def test_private_modules_are_not_exported() -> None:
    public = {name for name in dir(sse_tasks) if not name.startswith("_")}
    modules = {"brokers", "cli", "demo", "engines", "executors", "web"}  # sub-packages, not API names
    public_modules = {"client", "celery", "django", "rq", "huey", "dramatiq", "taskiq", "arq"}
    assert public - modules - public_modules <= set(sse_tasks.__all__)


@pytest.mark.parametrize(
    ("imported", "name", "module", "never"),
    [
        # An engine's worker process (and ``sse-tasks watch``) never loads the web stack.
        ("sse_tasks.client", "TaskHub", "sse_tasks._hub", ("starlette", "uvicorn", "sse_starlette")),
        # Nor ``sse-tasks watch`` and ``submit``: ``serve`` is imported when it runs.
        ("sse_tasks.cli", "TaskHub", "sse_tasks._hub", ("starlette", "uvicorn", "sse_starlette")),
        # A server or worker process never loads httpx (nor the command line it brings).
        ("sse_tasks", "Client", "sse_tasks.client", ("httpx", "httpx_sse", "rich", "pygments")),
    ],
    ids=["the web stack", "the command line", "the client"],
)
def test_what_sse_tasks_imports_beyond_the_task_model_waits_for_first_use(
    imported: str, name: str, module: str, never: tuple[str, ...]
) -> None:
    code = (
        f"import sys, sse_tasks, {imported}\n"
        f"print(sorted(m for m in {never!r} if m in sys.modules))\n"
        f"print(sse_tasks.{name}.__module__, {never[0]!r} in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == ["[]", f"{module} True"], out.stdout + out.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Nope"):
        sse_tasks.Nope  # type: ignore[attr-defined]  # noqa: B018
    assert {"Client", "AsyncClient", "APIError", "ConnectionFailed"} <= set(dir(sse_tasks))
