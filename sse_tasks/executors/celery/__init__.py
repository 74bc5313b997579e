"""Celery as an executor: the work runs on Celery workers, the hub streams its state.

Needs the ``celery`` extra (``pip install 'sse-tasks[celery]'``) and the Redis broker.
"""

from .executor import CeleryExecutor
from .worker import CeleryHook, connect

__all__ = ["CeleryExecutor", "CeleryHook", "connect"]
