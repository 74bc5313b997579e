"""A sender's side: RQ's queue, storing the jobs it enqueues ``queued`` on the hub at once."""

from __future__ import annotations

import logging
import os
from typing import Any

import rq

from ..._core.models import Task, valid_task_id
from ...brokers import is_redis_url
from ...brokers.redis import RedisBroker
from ...engines import SyncWriter
from ...engines.tags import TAGS_KEY, sent_tags
from .worker import META_KEY, iso_time, name_of

logger = logging.getLogger("sse_tasks.rq")


class Queue(rq.Queue):
    """RQ's ``Queue``; each job enqueued through it (``enqueue``, ``enqueue_call``) is
    stored ``queued`` on the hub (``hub_url``, default ``$SSE_TASKS_BROKER``) at once,
    rather than when a worker picks it up. Jobs the hub sends are stored by the hub."""

    def __init__(self, *args: Any, hub_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = hub_url or os.environ.get("SSE_TASKS_BROKER") or ""
        if not is_redis_url(url):
            raise ValueError(f"Queue needs the hub's Redis URL (hub_url or $SSE_TASKS_BROKER): not {url!r}")
        self.writer = SyncWriter(RedisBroker(url))

    def enqueue_job(
        self, job: rq.job.Job, pipeline: Any = None, at_front: bool = False, unique: bool = False
    ) -> rq.job.Job:
        enqueued = super().enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        if not isinstance(job.meta.get(META_KEY), dict) and valid_task_id(job.id):
            tags = sent_tags(job.meta.get(TAGS_KEY), job.id)
            queued = Task(id=job.id, name=name_of(job), created_at=iso_time(job.enqueued_at), tags=tags)
            try:
                self.writer.create(queued)
            except self.writer.unreachable:
                logger.warning("job %s: not stored on the hub yet (its Redis is unreachable)", job.id)
        return enqueued
