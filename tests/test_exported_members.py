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


def test_an_engines_worker_hook_loads_neither_the_web_stack_nor_the_client() -> None:
    """``import sse_tasks`` loads the task model alone: a worker process of an engine never
    imports starlette or uvicorn, nor ``sse-tasks watch`` the server."""
    code = (
        "import sys, sse_tasks, sse_tasks.client\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette') if m in sys.modules))\n"
        "print(sse_tasks.TaskHub.__module__, 'starlette' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == ["[]", "sse_tasks._hub True"], out.stdout + out.stderr


def test_the_client_is_imported_on_first_use() -> None:
    """A server or worker process never loads httpx (nor the command line httpx loads with it)."""
    code = (
        "import sys, sse_tasks\n"
        "print(sorted(m for m in ('httpx', 'httpx_sse', 'rich', 'pygments') if m in sys.modules))\n"
        "print(sse_tasks.Client.__module__, 'httpx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == ["[]", "sse_tasks.client True"], out.stdout + out.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Nope"):
        sse_tasks.Nope  # type: ignore[attr-defined]  # noqa: B018
    assert {"Client", "AsyncClient", "APIError", "ConnectionFailed"} <= set(dir(sse_tasks))
