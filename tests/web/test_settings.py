"""Web settings: one frozen object, validated once, changed only through configure()."""

from __future__ import annotations

import dataclasses

import pytest
from _support import HubFactory

from sse_tasks import TaskHub, TaskTokens

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "options",
    [
        {"heartbeat": -1},
        {"retry": -5},
        {"max_streams": -1},
        {"max_body_size": 0},
        {"max_stream_lifetime": 0},
        {"body_timeout": -1.0},
        {"max_streams_per_client": 0},
        {"cors_origins": ["not an origin"]},
        {"cors_origins": ["*"], "cors_credentials": True},
    ],
)
def test_bad_settings_are_refused_by_the_constructor_and_by_configure(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TaskHub("memory://", **options)  # type: ignore[arg-type]
    hub = TaskHub("memory://")
    before = hub.settings
    with pytest.raises(ValueError):
        hub.configure(**options)
    assert hub.settings is before


def test_settings_are_frozen_and_configure_replaces_them() -> None:
    hub = TaskHub("memory://", heartbeat=15)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hub.settings.heartbeat = 1  # type: ignore[misc]
    hub.configure(
        heartbeat=2.5, tokens="a secret of at least sixteen bytes", cors_origins=["https://a.example"]
    )
    assert hub.settings.heartbeat == 2.5
    assert isinstance(hub.settings.tokens, TaskTokens)
    assert hub.settings.cors_origins == ("https://a.example",)
    with pytest.raises(TypeError, match="unknown web settings: nope"):
        hub.configure(nope=1)


async def test_configure_is_refused_once_the_hub_runs_or_its_routes_are_out(make_hub: HubFactory) -> None:
    hub = make_hub()
    hub.routes  # noqa: B018 - handed out: mounted somewhere with these settings
    with pytest.raises(RuntimeError, match="before it runs"):
        hub.configure(heartbeat=1)
    running = make_hub()
    async with running:
        with pytest.raises(RuntimeError, match="before it runs"):
            running.configure(heartbeat=1)
