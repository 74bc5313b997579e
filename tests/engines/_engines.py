"""What the engine contract suite knows of an engine under test (the fixtures that make
them are in this directory's conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from signal import SIGCONT, SIGSTOP
from typing import Any

import pytest
from _support import signal_tree

from sse_tasks import TaskHub
from sse_tasks.engines import RemoteEngine

LEASE = 1.5  # seconds: the lease of the workers that die


def group(engine: str) -> pytest.MarkDecorator:
    """The xdist group of an engine's tests that share its workers: they run on one pytest
    process, which starts those workers once (``pytestmark`` of the engine's modules)."""
    return pytest.mark.xdist_group(f"engine-{engine}")


@dataclass
class Dying:
    """Workers with a short lease on a queue of their own: ``enqueue`` there, then ``kill``
    (or ``pause`` and later ``resume`` them: None where they are not a process of their own)."""

    enqueue: Callable[..., str]
    kill: Callable[[], None]
    pause: Callable[[], None] | None = None
    resume: Callable[[], None] | None = None

    @classmethod
    def of(cls, enqueue: Callable[..., str], worker: Any) -> Dying:
        """The workers of one process (its ``proc`` a ``subprocess.Popen``) and its children."""
        pid = worker.proc.pid
        return cls(enqueue, worker.kill, lambda: signal_tree(pid, SIGSTOP), lambda: signal_tree(pid, SIGCONT))


@dataclass
class Engine:
    """One engine under the contract: its web side, its own enqueue, workers that die."""

    name: str
    url: str  # the hub's Redis
    make: Callable[[bool], RemoteEngine]  # make(reachable)
    enqueue: Callable[..., str]  # enqueue(name, **params) -> task id, with no hub involved
    dying: Callable[[], Dying]
    #: Waits until the engine has taken in the revoke of a task (a worker that has the
    #: message already discards it then); the fake's workers read the stored state.
    revoked: Callable[[str], None] = lambda task_id: None
    #: ``tagged(tags, name, **params)``: the engine's own enqueue, the task given ``tags``
    #: the engine's way (a header, job meta, a message option, a label, a keyword).
    tagged: Callable[..., str] | None = None

    def hub(self, *, reachable: bool = True, url: str | None = None, **options: Any) -> TaskHub:
        return TaskHub(url or self.url, executor=self.make(reachable), heartbeat=0.5, **options)
