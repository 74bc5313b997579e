"""The hub's API as an OpenAPI 3.1 document, served at ``/openapi.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core.models import MAX_TASK_ID_LENGTH, TaskState

if TYPE_CHECKING:
    from collections.abc import Iterable

_ERROR = {"$ref": "#/components/schemas/Error"}
_TASK = {"$ref": "#/components/schemas/Task"}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_TASK_ID_LENGTH},
}
_LAST_EVENT_ID = [
    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
    {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
]
_TOKEN = {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "task token"}
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for code in codes
    }


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(task_names: Iterable[str], root_path: str = "") -> dict[str, Any]:
    """The document, with the registered task names and ``root_path`` as the server URL."""
    names = sorted(task_names)
    states = [state.value for state in TaskState]
    return {
        "openapi": "3.1.0",
        "info": {"title": "sse-tasks", "version": "1"},
        "servers": [{"url": root_path or "/"}],
        "paths": {
            "/tasks": {
                "post": {
                    "summary": "Submit a task",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submit"}}},
                    },
                    "responses": {
                        "202": _json(_TASK, "queued"),
                        **_errors(400, 401, 403, 404, 408, 413, 415, 422, 503),
                    },
                },
                "get": {
                    "summary": "List tasks, newest first",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": {"enum": states}},
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        _TOKEN,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "tasks": {"type": "array", "items": _TASK},
                                    "cursor": {"type": "string"},
                                },
                            },
                            "tasks",
                        ),
                        **_errors(401, 403, 422, 503),
                    },
                },
            },
            "/tasks/{task_id}": {
                "parameters": [_TASK_ID, _TOKEN],
                "get": {
                    "summary": "A task's snapshot",
                    "responses": {"200": _json(_TASK, "snapshot"), **_errors(401, 403, 404, 410, 503)},
                },
                "delete": {
                    "summary": "Cancel a task",
                    "responses": {"202": _json(_TASK, "cancelled"), **_errors(401, 403, 404, 409, 410, 503)},
                },
            },
            "/tasks/{task_id}/events": {
                "get": {
                    "summary": "SSE stream of one task",
                    "parameters": [_TASK_ID, _TOKEN, *_LAST_EVENT_ID],
                    "responses": {
                        "200": {"description": "event stream", "content": _SSE},
                        "204": {"description": "resumed at or past the terminal event"},
                        **_errors(401, 403, 404, 410, 503),
                    },
                }
            },
            "/events": {
                "get": {
                    "summary": "SSE stream of all or the selected tasks",
                    "parameters": [
                        {
                            "name": "task",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "string"}},
                        },
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        _TOKEN,
                        *_LAST_EVENT_ID,
                    ],
                    "responses": {
                        "200": {"description": "event stream", "content": _SSE},
                        **_errors(401, 403, 404, 410, 422, 503),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Submit": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"enum": names} if names else {"type": "string"},
                        "params": {"type": "object"},
                    },
                },
                "Task": {
                    "type": "object",
                    "required": ["id", "name", "state", "created_at", "links"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "state": {"enum": states},
                        "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                        "message": {"type": ["string", "null"]},
                        "result": {},
                        "error": {"type": ["object", "null"]},
                        "created_at": {"type": "string"},
                        "started_at": {"type": ["string", "null"]},
                        "finished_at": {"type": ["string", "null"]},
                        "links": {"type": "object"},
                        "token": {"type": "string", "description": "only in the 202, with task tokens on"},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
            }
        },
    }
