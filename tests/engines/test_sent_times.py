"""The time a sender writes into an engine's message becomes a task's ``created_at`` only
if it is one: anything else (markup, a number, a lone surrogate) gives the time the
worker read the message."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest

from sse_tasks._core.models import utc_time


def _celery(created: Any) -> str:
    message = importlib.import_module("sse_tasks.executors.celery.message")
    return str(message.created_at_of({message.CREATED_HEADER: created}))


def _arq(created: Any) -> str:
    message = importlib.import_module("sse_tasks.executors.arq.message")
    return str(message.queued_snapshot("t-1", "work", {"created_at": created}, None).created_at)


ADAPTERS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "celery": ("celery", _celery),
    "arq": ("arq", _arq),
}


@pytest.mark.parametrize("engine", sorted(ADAPTERS))
@pytest.mark.parametrize("sent", ["<b>now</b>", "yesterday", 1765122257, "2026-13-01T00:00:00Z", "\ud800"])
def test_a_sent_time_that_is_not_one_is_replaced_by_now(engine: str, sent: Any) -> None:
    package, created_at = ADAPTERS[engine]
    pytest.importorskip(package)
    taken = created_at(sent)
    assert utc_time(taken) == taken  # a UTC time, in the snapshot's form


@pytest.mark.parametrize("engine", sorted(ADAPTERS))
def test_a_sent_time_is_kept_in_the_snapshot_s_form(engine: str) -> None:
    package, created_at = ADAPTERS[engine]
    pytest.importorskip(package)
    assert created_at("2026-12-07T16:44:17+01:00") == "2026-12-07T15:44:17.000000Z"


@pytest.mark.parametrize(
    ("stamp", "expected"), [(10**20, None), (-5, None), (1765122257123, "2025-12-07T15:44:17.123000Z")]
)
def test_dramatiq_s_own_timestamp_is_taken_only_if_it_is_a_time(stamp: int, expected: str | None) -> None:
    pytest.importorskip("dramatiq")
    from sse_tasks.executors.dramatiq.message import created_at

    sent = type("Message", (), {"message_timestamp": stamp})()
    assert created_at(sent) == expected
