"""The broker contract suite runs on memory://, one Redis and a Redis Cluster."""

from __future__ import annotations

import pytest
from _support import broker_url_of


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return broker_url_of(request)
