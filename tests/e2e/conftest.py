"""End-to-end runs (examples, pages, proxies, benchmarks, soak) start their processes
without coverage: they show the pieces working together, and the code they run is
measured by the tests of each piece."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _unmeasured(unmeasured: None) -> None:
    """Every test here (see ``unmeasured``)."""
