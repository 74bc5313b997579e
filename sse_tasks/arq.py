"""arq as the executor: ``hooked`` on the worker side, ``ArqExecutor`` on the web side.

Importing this module imports arq (the ``arq`` extra); ``import sse_tasks`` does not.
"""

from .executors.arq import ArqExecutor, ArqHook, Cancelled, hooked

__all__ = ["ArqExecutor", "ArqHook", "Cancelled", "hooked"]
