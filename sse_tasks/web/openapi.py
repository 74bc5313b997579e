"""What each endpoint reads and answers, and the OpenAPI 3.1 document built from it.

Every route of the hub carries an :class:`Operation` per method (``APIRoute.operations``,
see :mod:`sse_tasks.web.routes`): its summary, the query parameters and headers it reads,
its request body and its answers. An endpoint reads a query parameter or a header only
through a :class:`Param` its operation declares (reading an undeclared one is a
``RuntimeError``), so ``/openapi.json``, generated from the routes the hub serves, names
everything they read; the snapshot's schema is generated from the fields of
:class:`~sse_tasks._core.models.Task` that ``Task.to_dict()`` publishes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.routing import BaseRoute

from .._core.models import MAX_TAG_LENGTH, MAX_TAGS, MAX_TASK_ID_LENGTH, TAG_PATTERN, Task, TaskState

Schema = Mapping[str, Any]

ERROR = {"$ref": "#/components/schemas/Error"}
TASK = {"$ref": "#/components/schemas/Task"}
SUBMIT = {"$ref": "#/components/schemas/Submit"}
#: The schema of each path parameter, by name.
PATH_PARAMETERS: dict[str, Schema] = {"task_id": {"type": "string", "maxLength": MAX_TASK_ID_LENGTH}}
STATES = [state.value for state in TaskState]
#: One tag, and the tags of a task (given at submit).
TAG_SCHEMA: Schema = {"type": "string", "pattern": TAG_PATTERN, "minLength": 1, "maxLength": MAX_TAG_LENGTH}
TAGS_SCHEMA: Schema = {"type": "array", "items": TAG_SCHEMA, "maxItems": MAX_TAGS}


@dataclass(frozen=True, eq=False)
class Param:
    """A query parameter or header an endpoint reads: read here, documented from here."""

    name: str
    schema: Schema
    description: str
    where: Literal["query", "header"] = "query"

    def get(self, request: Request) -> str | None:
        """Its value in ``request``, or None: a repeated query parameter's last value (as
        Starlette reads it), a repeated header's first."""
        self._check(request)
        source = request.headers if self.where == "header" else request.query_params
        return source.get(self.name)

    def get_all(self, request: Request) -> list[str]:
        """Every value of a repeatable query parameter, in order."""
        self._check(request)
        return request.query_params.getlist(self.name)

    def _check(self, request: Request) -> None:
        route = request.scope.get("route")
        operations = getattr(route, "operations", None)
        if operations is None:  # not one of the hub's routes (an app's own route reading it)
            return
        method = "GET" if request.method == "HEAD" else request.method
        operation = operations.get(method)
        if operation is not None and self not in operation.parameters:
            raise RuntimeError(
                f"{method} {getattr(route, 'path', '?')} reads the {self.where} parameter"
                f" {self.name!r} without declaring it in its Operation"
            )

    def to_openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": self.where, "description": self.description, "schema": self.schema}


@dataclass(frozen=True)
class Answer:
    """A successful answer of an operation."""

    status: int
    description: str
    schema: Schema | None = None
    media_type: str = "application/json"

    def to_openapi(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"description": self.description}
        if self.schema is not None:
            answer["content"] = {self.media_type: {"schema": self.schema}}
        return answer


@dataclass(frozen=True, eq=False)
class Operation:
    """One method of one route: what it reads (``parameters``, ``body``) and answers."""

    summary: str
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()
    parameters: tuple[Param, ...] = ()
    body: Schema | None = None

    def to_openapi(self, path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": self.summary}
        parameters = [*path_parameters, *(p.to_openapi() for p in self.parameters)]
        if parameters:
            operation["parameters"] = parameters
        if self.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.body}},
            }
        responses: dict[str, Any] = {str(a.status): a.to_openapi() for a in self.answers}
        for status in self.errors:
            responses[str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": ERROR}},
            }
        operation["responses"] = responses
        return operation


def openapi_document(
    routes: Iterable[BaseRoute], task_names: Iterable[str], root_path: str = ""
) -> dict[str, Any]:
    """The document of ``routes`` (each with its ``operations``), with the registered task
    names and ``root_path`` as the server URL."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operations: Mapping[str, Operation] | None = getattr(route, "operations", None)
        path = getattr(route, "path", None)
        if operations is None or path is None:
            continue  # not the hub's: undocumented (the tests walk every route for this)
        path_parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": PATH_PARAMETERS.get(name, {"type": "string"}),
            }
            for name in getattr(route, "param_convertors", {})
        ]
        item = paths.setdefault(path, {})
        for method, operation in operations.items():
            item[method.lower()] = operation.to_openapi(path_parameters)
    names = sorted(task_names)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sse-tasks", "version": "1"},
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Submit": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"enum": names} if names else {"type": "string"},
                        "params": {"type": "object"},
                        "tags": TAGS_SCHEMA,
                    },
                },
                "Task": snapshot_schema(),
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


#: What a field's type does not say.
_FIELD_NOTES: dict[str, Schema] = {
    "progress": {"minimum": 0, "maximum": 1},
    "error": {"properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
    "output_chunks": {"minimum": 0, "description": "output chunks kept (GET /tasks/{task_id}/output)"},
    "metadata": {"description": "a small JSON object the task sets as it runs (ctx.metadata())"},
    "tags": {"items": TAG_SCHEMA, "maxItems": MAX_TAGS, "description": "given at submit; select with ?tag="},
}
_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def snapshot_schema() -> dict[str, Any]:
    """The schema of ``Task.to_dict()``: each key from the type of the field of that name."""
    hints = typing.get_type_hints(Task)
    field_names = {field.name for field in dataclasses.fields(Task)}
    sample = Task(id="-", name="-").to_dict()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for key, value in sample.items():
        if key in field_names:
            schema, nullable = _schema_of(hints[key])
        elif isinstance(value, dict):  # links: built from the id and the mount point
            schema, nullable = {"type": "object", "properties": {k: {"type": "string"} for k in value}}, False
        else:  # pragma: no cover - a key that is no field must be described here
            raise TypeError(
                f"Task.to_dict() key {key!r} is no field of Task: describe it in snapshot_schema()"
            )
        properties[key] = {**schema, **_FIELD_NOTES.get(key, {})}
        if not nullable:
            required.append(key)
    properties["token"] = {"type": "string", "description": "only in the 202, with task tokens on"}
    return {"type": "object", "required": required, "properties": properties}


def _schema_of(hint: Any) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a field's type, and whether it may be null (or anything)."""
    if hint is Any:
        return {}, True
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"no JSON schema for the union {hint!r}")
        schema, _ = _schema_of(rest[0])
        if "enum" in schema:
            return {"enum": [*schema["enum"], None]}, True
        return {**schema, "type": [schema["type"], "null"]}, True
    if isinstance(hint, type) and issubclass(hint, TaskState):
        return {"enum": list(STATES)}, False
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        return {"type": "object"}, False
    if origin is list:
        return {"type": "array"}, False
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _schema_of(args[0])[0]}, False
    if origin in _JSON_TYPES:
        return {"type": _JSON_TYPES[origin]}, False
    raise TypeError(f"no JSON schema for {hint!r}: describe it in sse_tasks/web/openapi.py")
