"""RQ as an engine: the work runs on RQ workers, the hub streams its state.

Needs the ``rq`` extra (``pip install 'sse-tasks[rq]'``) and the Redis broker.
"""

from .engine import RQEngine
from .queue import Queue
from .worker import Job, Worker

__all__ = ["Job", "Queue", "RQEngine", "Worker"]
