"""The runner and its two seams: a local executor (work in this process) and a remote
engine (work on another engine's workers)."""

from .engine import NotSent, RemoteEngine
from .executor import Executor, LocalExecutor
from .inprocess import InProcessExecutor
from .job import Job, Publisher
from .runner import Runner

__all__ = [
    "Executor",
    "InProcessExecutor",
    "Job",
    "LocalExecutor",
    "NotSent",
    "Publisher",
    "RemoteEngine",
    "Runner",
]
