"""The exception tree: HTTP errors and a task's cancellation are kept apart."""

from __future__ import annotations

import re

import sse_tasks
from sse_tasks._core import errors
from sse_tasks._core.errors import HTTP_ERRORS, SSETasksError, TaskCancelled, TaskFinished, error_class


def test_the_module_docstring_draws_every_exception_with_its_status() -> None:
    doc = errors.__doc__ or ""
    exported = [
        getattr(sse_tasks, name)
        for name in sse_tasks.__all__
        if isinstance(getattr(sse_tasks, name), type) and issubclass(getattr(sse_tasks, name), BaseException)
    ]
    for cls in exported:
        assert re.search(rf"── {cls.__name__}\b", doc), f"{cls.__name__} is missing from the tree"
    for cls in HTTP_ERRORS:
        assert re.search(rf"── {cls.__name__} +{cls.status_code} ", doc), f"{cls.__name__}'s status"
    assert "BaseException\n └── TaskCancelled" in doc


def test_cancellation_is_control_flow_not_an_error() -> None:
    assert not issubclass(TaskCancelled, Exception)
    assert not issubclass(TaskCancelled, SSETasksError)
    assert TaskCancelled not in HTTP_ERRORS


def test_each_answer_maps_to_one_class() -> None:
    for cls in HTTP_ERRORS:
        assert error_class(cls.status_code, cls.code) is cls
    assert error_class(409, "cancelled") is TaskFinished  # the only 409 there is
    assert error_class(418, "teapot") is None
    pairs = [(cls.status_code, cls.code) for cls in HTTP_ERRORS]
    assert len(pairs) == len(set(pairs))
