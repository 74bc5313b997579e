"""The runner and its executor seam: where tasks are created, run and stopped."""

from .executor import Executor
from .inprocess import InProcessExecutor
from .job import Job, Publisher
from .runner import Runner

__all__ = ["Executor", "InProcessExecutor", "Job", "Publisher", "Runner"]
