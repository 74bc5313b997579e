"""RQ as the engine: ``Worker`` on the worker side (``rq worker --worker-class
sse_tasks.rq.Worker``), ``RQEngine`` on the web side.

Importing this module imports RQ (the ``rq`` extra); ``import sse_tasks`` does not.
"""

from .executors.rq import Job, Queue, RQEngine, Worker

__all__ = ["Job", "Queue", "RQEngine", "Worker"]
