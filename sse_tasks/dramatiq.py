"""Dramatiq as the engine: :class:`StatusMiddleware` (or :func:`connect`) on the worker side,
:class:`DramatiqEngine` on the web side.

Importing this module imports Dramatiq (the ``dramatiq`` extra); ``import sse_tasks`` does not.
"""

from .executors.dramatiq import DramatiqEngine, StatusMiddleware, connect

__all__ = ["DramatiqEngine", "StatusMiddleware", "connect"]
