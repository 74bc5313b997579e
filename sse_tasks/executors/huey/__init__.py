"""Huey as an executor: the work runs on Huey's consumer, the hub streams its state.

Needs the ``huey`` extra (``pip install 'sse-tasks[huey]'``) and the Redis broker.
"""

from .engine import HueyEngine
from .hook import HueyHook, connect

__all__ = ["HueyEngine", "HueyHook", "connect"]
