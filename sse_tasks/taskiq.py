"""taskiq as the executor: ``StatusMiddleware`` on the worker side, ``TaskiqExecutor`` on the web side.

Importing this module imports taskiq (the ``taskiq`` extra); ``import sse_tasks`` does not.
"""

from .executors.taskiq import StatusMiddleware, TaskiqExecutor

__all__ = ["StatusMiddleware", "TaskiqExecutor"]
