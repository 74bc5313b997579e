"""Celery as the executor: ``connect`` on the worker side, ``CeleryExecutor`` on the web side.

Importing this module imports Celery (the ``celery`` extra); ``import sse_tasks`` does not.
"""

from .executors.celery import CeleryExecutor, CeleryHook, connect

__all__ = ["CeleryExecutor", "CeleryHook", "connect"]
