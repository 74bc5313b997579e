"""taskiq as an executor: the work runs on taskiq workers, the hub streams its state.

Needs the ``taskiq`` extra (``pip install 'sse-tasks[taskiq]'``) and the Redis broker.
"""

from .executor import TaskiqExecutor
from .middleware import StatusMiddleware

__all__ = ["StatusMiddleware", "TaskiqExecutor"]
