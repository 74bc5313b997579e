"""TaskHub's keywords: each explicit, typed and documented; broker options reach the broker."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from sse_tasks import MemoryBroker, TaskHub

DOCS = Path(__file__).parents[2] / "docs" / "tasks.md"


def _parameters() -> list[inspect.Parameter]:
    return [p for p in inspect.signature(TaskHub).parameters.values() if p.name != "self"]


def test_a_misspelt_keyword_is_a_type_error_from_the_hub() -> None:
    with pytest.raises(TypeError, match=r"TaskHub.*'heartbeet'"):
        TaskHub(heartbeet=1)  # type: ignore[call-arg]


def test_every_keyword_is_explicit_typed_and_documented() -> None:
    doc = inspect.cleandoc(TaskHub.__doc__ or "")  # (Python 3.13 strips the indentation itself)
    table = DOCS.read_text()
    for parameter in _parameters():
        name = parameter.name
        assert parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY), name
        assert parameter.annotation is not inspect.Parameter.empty, f"{name} has no type"
        in_doc = re.search(rf"^    (\w+, )*{name}(, \w+)*: ", doc, re.MULTILINE)
        assert in_doc, f"{name} is not in TaskHub's docstring"
        in_table = re.search(rf"^\| (`\w+`, )*`{name}`(, `\w+`)* \|", table, re.MULTILINE)
        assert in_table, f"{name} is not in the options table of docs/tasks.md"


def test_broker_options_reach_a_memory_broker() -> None:
    hub = TaskHub("memory://", history=5, retention=7.5, max_tasks=3)
    assert isinstance(hub.broker, MemoryBroker)
    assert (hub.broker.log.maxlen, hub.broker.retention, hub.broker.max_tasks) == (5, 7.5, 3)


def test_broker_options_reach_a_redis_broker_over_its_url_options() -> None:
    pytest.importorskip("redis")
    from sse_tasks.brokers.redis import RedisBroker

    url = "redis://127.0.0.1:1/0?lease=9&prefix=from_url&history=70"
    hub = TaskHub(url, lease=2.5, outage_grace=4, prefix="app", max_connections=3, retention=60)
    broker = hub.broker
    assert isinstance(broker, RedisBroker)
    assert (broker.lease, broker.outage_grace, broker.prefix, broker.max_connections) == (2.5, 4.0, "app", 3)
    assert (broker.retention, broker.history) == (60.0, 70)  # not given: the URL's


@pytest.mark.parametrize("option", ["lease", "outage_grace", "prefix", "max_connections"])
def test_a_redis_option_with_a_memory_broker_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        TaskHub("memory://", **{option: 1})  # type: ignore[arg-type]


def test_broker_options_with_a_broker_instance_are_refused() -> None:
    with pytest.raises(ValueError, match="history"):
        TaskHub(MemoryBroker(), history=5)


def test_a_broker_option_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        TaskHub("memory://", max_tasks=0)
