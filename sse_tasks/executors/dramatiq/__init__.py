"""Dramatiq as an engine: the work runs on Dramatiq workers, the hub streams its state.

Needs the ``dramatiq`` extra (``pip install 'sse-tasks[dramatiq]'``) and the Redis broker.
"""

from .engine import DramatiqEngine
from .middleware import StatusMiddleware, connect

__all__ = ["DramatiqEngine", "StatusMiddleware", "connect"]
