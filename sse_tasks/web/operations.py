"""What each route of the hub's API reads and answers: its :class:`Operation` per method.

The API's declared surface, as data: the :class:`Param` each endpoint reads (query
parameters and headers) and one :class:`Operation` per route and method. The route
table (:data:`sse_tasks.web.routes.ROUTES`) pairs each operation with its endpoint;
``/openapi.json`` is generated from the routes, and an endpoint reads a query parameter
or header only through a :class:`Param` of its operation (see
:mod:`sse_tasks.web.openapi`). It sits below the endpoints, which import these params.
"""

from __future__ import annotations

from .auth import TOKEN
from .openapi import STATES, SUBMIT, TAGS_SCHEMA, TASK, Answer, Operation, Param

MAX_LIST = 1000  # tasks in one GET /tasks
MAX_SELECTED = 1000  # ?task= ids in one stream

# What the endpoints read besides the path and the body.
STATE = Param("state", {"enum": STATES}, "only tasks in this state")
NAME = Param("name", {"type": "string"}, "only tasks of this task function")
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST}, "at most this many (100)")
BEFORE = Param(
    "before",
    {"type": "string", "maxLength": 128},
    "only tasks older than this one (a task id, or a created_at): the next page",
)
TASK_IDS = Param(
    "task",
    {"type": "array", "items": {"type": "string"}, "maxItems": MAX_SELECTED},
    "only these tasks (repeat it for each)",
)
TAGS = Param("tag", TAGS_SCHEMA, "only tasks carrying this tag (repeat it: tasks carrying every one)")
OUTPUT = Param(
    "output",
    {"type": "string", "pattern": "^([01]|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])?$"},
    "carry task.output events too (1, true or empty; 0 or false: not)",
)
LAST_EVENT_ID_HEADER = Param(
    "Last-Event-ID", {"type": "string"}, "resume after this event (what EventSource sends)", where="header"
)
LAST_EVENT_ID = Param(
    "last_event_id", {"type": "string"}, "resume after this event, for clients that cannot set headers"
)
_RESUME = (LAST_EVENT_ID_HEADER, LAST_EVENT_ID)
SIGNAL = Param(
    "signal",
    {"type": "string", "pattern": "^([A-Za-z_][A-Za-z0-9_]{0,63})?$"},
    "the signal to patch (task, also when empty)",
)
_TASK_LIST = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": TASK}, "cursor": {"type": "string"}},
}
_STREAM = Answer(200, "event stream", {"type": "string"}, "text/event-stream")

_BY_ID = (TOKEN,)

# One Operation per route and method; the route table (sse_tasks/web/routes.py) pairs
# each with its endpoint.
LIST_TASKS = Operation(
    "List tasks, newest first",
    (Answer(200, "tasks, and the log position to stream from", _TASK_LIST),),
    (401, 403, 422, 503),
    (STATE, NAME, TAGS, LIMIT, TOKEN, BEFORE),
)
SUBMIT_TASK = Operation(
    "Submit a task",
    (Answer(202, "queued", TASK),),
    (400, 401, 403, 404, 408, 413, 415, 422, 503),
    (TOKEN,),
    body=SUBMIT,
)
GET_TASK = Operation("A task's snapshot", (Answer(200, "snapshot", TASK),), (401, 403, 404, 410, 503), _BY_ID)
CANCEL_TASK = Operation(
    "Cancel a task", (Answer(202, "cancelled", TASK),), (401, 403, 404, 409, 410, 503), _BY_ID
)
TASK_EVENTS = Operation(
    "SSE stream of one task",
    (_STREAM, Answer(204, "resumed at or past the terminal event")),
    (401, 403, 404, 410, 503),
    (TOKEN, *_RESUME),
)
TASK_OUTPUT = Operation(
    "A task's retained output, joined",
    (Answer(200, "its output chunks' text", {"type": "string"}, "text/plain"),),
    (401, 403, 404, 410, 503),
    _BY_ID,
)
EVENTS = Operation(
    "SSE stream of all or the selected tasks",
    (_STREAM,),
    (401, 403, 404, 410, 422, 503),
    (TASK_IDS, NAME, TAGS, OUTPUT, TOKEN, *_RESUME),
)
TASK_HTMX = Operation(
    "One task's stream of HTML fragments for htmx's SSE extension (state, output, done)",
    (_STREAM,),
    (401, 403, 404, 410, 503),
    (TOKEN, *_RESUME),
)
TASK_DATASTAR = Operation(
    "One task's stream of Datastar events (datastar-merge-fragments, datastar-merge-signals)",
    (_STREAM,),
    (401, 403, 404, 410, 422, 501, 503),
    (SIGNAL, TOKEN, *_RESUME),
)
VENDOR = Operation(
    "A vendored browser library: htmx.min.js, htmx-ext-sse.min.js, datastar.js",
    (Answer(200, "a script", {"type": "string"}, "text/javascript"),),
    (404,),
)
OPENAPI = Operation("This document", (Answer(200, "OpenAPI 3.1", {"type": "object"}),))
BROWSER_MODULE = Operation(
    "The browser module (followTask, followTasks)",
    (Answer(200, "an ES module", {"type": "string"}, "text/javascript"),),
)
METRICS = Operation(
    "Metrics (with metrics=True)",
    (Answer(200, "the Prometheus text format", {"type": "string"}, "text/plain"),),
)
DASHBOARD = Operation(
    "The live operations page (with dashboard=True; only True from the hook for 'operate' opens it)",
    (Answer(200, "an HTML page", {"type": "string"}, "text/html"),),
    (403, 404),
    (TOKEN,),
)
