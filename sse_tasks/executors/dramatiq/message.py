"""What a Dramatiq message tells the middleware: the hub's options, the snapshot built from them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..._core.models import Task, utc_time
from ..._core.text import clean_text
from ...engines.tags import TAGS_KEY, sent_tags

#: Message options the hub sets on the messages it sends.
HUB_OPTION = "sse_tasks_hub"  # the hub stores `queued` itself
OWNER_OPTION = "sse_tasks_owner"  # who submitted it, for the authorization hook
#: The task's tags (a list), set by the hub or by ``send_with_options(sse_tasks_tags=[…])``.
TAGS_OPTION = TAGS_KEY


def created_at(message: Any) -> str | None:
    """When the message was first enqueued (Dramatiq's own timestamp, milliseconds)."""
    millis = getattr(message, "message_timestamp", None)
    if not isinstance(millis, int) or millis <= 0:
        return None
    try:
        return utc_time(datetime.fromtimestamp(millis / 1000, tz=timezone.utc))
    except (OverflowError, OSError, ValueError):  # a sender's timestamp beyond any date
        return None


def queued_snapshot(message: Any) -> Task:
    """The ``queued`` snapshot of the task a message carries."""
    options = getattr(message, "options", None) or {}
    owner = options.get(OWNER_OPTION)
    stamp = created_at(message)
    extra: dict[str, Any] = {} if stamp is None else {"created_at": stamp}
    return Task(
        id=message.message_id,
        name=message.actor_name,
        owner=clean_text(str(owner)) if owner else None,
        tags=sent_tags(options.get(TAGS_KEY), message.message_id),
        **extra,
    )
