"""Huey as the executor: ``connect`` on the worker side, ``HueyEngine`` on the web side.

Importing this module imports Huey (the ``huey`` extra); ``import sse_tasks`` does not.
"""

from .executors.huey import HueyEngine, HueyHook, connect

__all__ = ["HueyEngine", "HueyHook", "connect"]
