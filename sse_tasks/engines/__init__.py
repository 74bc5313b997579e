"""What an engine adapter (Celery, RQ, Huey, Dramatiq, arq, taskiq) is built from.

The web side: a :class:`RemoteEngine` (its tasks, ``send``, ``revoke``), given to
``TaskHub(executor=…)``. The worker side, engine-neutral: a hook driven by the engine's
own signals or middleware makes a :class:`WorkerRun` per attempt, one :class:`Keeper` per
process, and writes through a :class:`WorkerWriter` (``SyncWriter`` over the hub's Redis
broker). An asyncio engine's hook makes an :class:`AsyncRun` per attempt and one
:class:`AsyncKeeper` per event loop, writing through ``AsyncWriter`` (an
:class:`AsyncWorkerWriter`). A message's tags, under :data:`TAGS_KEY`, are read with
:func:`sent_tags`. See
"Writing an engine adapter" in ``docs/architecture.md``.
"""

from typing import TYPE_CHECKING

from .._runner.engine import NotSent, RemoteEngine
from .._runner.job import Job, error_of, result_error, unencodable
from ..brokers.redis.async_writer import AsyncWriter
from ..brokers.redis.sync import SyncWriter
from .async_run import AsyncKeeper, AsyncRun
from .tags import TAGS_KEY, sent_tags
from .worker import Keeper, WorkerRun
from .writer import AsyncWorkerWriter, Started, WorkerWriter

if TYPE_CHECKING:
    from ..brokers.redis import RedisBroker

    def _writers(broker: RedisBroker) -> tuple[WorkerWriter, AsyncWorkerWriter]:
        """The Redis writers are the worker side's writers (checked by mypy)."""
        return SyncWriter(broker), AsyncWriter(broker)


__all__ = [
    "TAGS_KEY",
    "AsyncKeeper",
    "AsyncRun",
    "AsyncWorkerWriter",
    "AsyncWriter",
    "Job",
    "Keeper",
    "NotSent",
    "RemoteEngine",
    "Started",
    "SyncWriter",
    "WorkerRun",
    "WorkerWriter",
    "error_of",
    "result_error",
    "sent_tags",
    "unencodable",
]
