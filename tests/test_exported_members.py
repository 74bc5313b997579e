"""Everything public is exported from ``sse_tasks`` and documented."""

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
