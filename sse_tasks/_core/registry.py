"""Registered task functions and the check of client params against their signatures."""

from __future__ import annotations

import functools
import inspect
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from .context import TaskContext
from .errors import InvalidRequest
from .text import clean_text

TaskFunction = Callable[..., Any]

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class RegisteredTask:
    """A task function with what the hub needs to check and run it."""

    name: str
    func: TaskFunction
    is_async: bool
    params: tuple[inspect.Parameter, ...]
    hints: Mapping[str, Any]
    accepts_any: bool  # has **kwargs
    timeout: float | None

    context_param: str | None = None  # the parameter annotated TaskContext, if any
    context_positional: bool = False  # that parameter is positional-only

    @classmethod
    def build(cls, func: TaskFunction, name: str | None, timeout: float | None) -> RegisteredTask:
        """Inspect ``func``; raises ``TypeError`` for a signature clients cannot call.

        The function is handed a :class:`TaskContext` only through a parameter annotated
        ``TaskContext`` (any position, any name); every other parameter is a param.
        """
        if not callable(func):
            raise TypeError(f"task function must be callable, not {func!r}")
        parameters = list(inspect.signature(func).parameters.values())
        hints = _resolve_hints(func, parameters)
        context = [p for p in parameters if _is_context(p, hints)]
        if not context and parameters and _is_legacy_context(parameters[0]):
            warnings.warn(
                f"task function {func.__qualname__}: annotate its first parameter as "
                f"'{parameters[0].name}: TaskContext' (an unannotated context is deprecated)",
                DeprecationWarning,
                stacklevel=4,
            )
            context = [parameters[0]]
        if len(context) > 1:
            raise TypeError(f"task function {func.__qualname__} takes more than one TaskContext")
        rest = [p for p in parameters if p not in context]
        for param in rest:
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"task function {func.__qualname__} cannot take *{param.name}")
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise TypeError(f"task function {func.__qualname__}: param {param.name!r} is positional-only")
        if (
            context
            and context[0].kind is inspect.Parameter.POSITIONAL_ONLY
            and parameters[0] is not context[0]
        ):
            raise TypeError(
                f"task function {func.__qualname__}: a positional-only TaskContext must come first"
            )
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        name = name or func.__name__
        if not isinstance(name, str) or not 0 < len(name) <= 200 or clean_text(name) != name:
            raise ValueError(f"task name {name!r} must be 1 to 200 characters of text")
        return cls(
            name=name,
            func=func,
            is_async=_is_async(func),
            params=tuple(p for p in rest if p.kind is not inspect.Parameter.VAR_KEYWORD),
            hints={k: v for k, v in hints.items() if not context or k != context[0].name},
            accepts_any=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest),
            timeout=timeout,
            context_param=context[0].name if context else None,
            context_positional=bool(context) and context[0].kind is inspect.Parameter.POSITIONAL_ONLY,
        )

    def call_with(self, context: Any, params: dict[str, Any]) -> Callable[[], Any]:
        """A call of the function with ``params`` (and ``context``, where it asks for one)."""
        if self.context_param is None:
            return functools.partial(self.func, **params)
        if self.context_positional:
            return functools.partial(self.func, context, **params)
        return functools.partial(self.func, **params, **{self.context_param: context})

    def validate(self, params: Any) -> dict[str, Any]:
        """Check JSON ``params`` against the signature; raises :class:`InvalidRequest`."""
        if not isinstance(params, dict):
            raise InvalidRequest("'params' must be a JSON object")
        known = {p.name: p for p in self.params}
        errors: list[str] = []
        for key in params:
            if key not in known and not self.accepts_any:
                errors.append(f"unexpected param {key!r}")
        for name, param in known.items():
            if name not in params:
                if param.default is _EMPTY:
                    errors.append(f"missing param {name!r}")
                continue
            hint = self.hints.get(name, Any)
            if not _matches(params[name], hint):
                errors.append(f"param {name!r} must be {_describe(hint)}")
        if errors:
            raise InvalidRequest(f"task {self.name!r}: " + "; ".join(errors))
        return dict(params)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional and keyword arguments (after the context) to params by name."""
        names = [p.name for p in self.params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(names)} positional params, got {len(args)}")
        params = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in params:
                raise TypeError(f"{self.name}() got multiple values for {key!r}")
            params[key] = value
        return params


def _resolve_hints(func: TaskFunction, params: list[inspect.Parameter]) -> dict[str, Any]:
    """Type hints of ``params``; one that cannot be resolved (e.g. a name imported only
    under ``TYPE_CHECKING``) is left out rather than spoiling the others."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: S110 - resolve them one by one below
        pass
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
    hints: dict[str, Any] = {}
    for param in params:
        annotation = param.annotation
        if annotation is _EMPTY:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the function's own annotation
            except Exception:  # noqa: S112 - unresolvable: left unchecked
                continue
        hints[param.name] = annotation
    return hints


def _is_context(param: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    """Is ``param`` annotated ``TaskContext`` (also as an unresolvable string, e.g. a name
    imported only under ``TYPE_CHECKING``)?"""
    hint = hints.get(param.name, param.annotation)
    if hint is TaskContext:
        return True
    if isinstance(hint, str):
        return hint.rpartition(".")[2].strip("'\" ") == "TaskContext"
    return False


def _is_legacy_context(param: inspect.Parameter) -> bool:
    # Before contexts were injected by annotation, every task took one first, usually
    # named ctx; such functions keep working (with a warning) rather than 422 on "ctx".
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return param.kind in positional and param.annotation is _EMPTY and param.name in ("ctx", "context")


def _is_async(func: TaskFunction) -> bool:
    # Callable objects count by their __call__; partials by what they wrap.
    target = getattr(func, "func", func)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - the method itself, not callability
    )


def _matches(value: Any, hint: Any) -> bool:
    """Does a decoded JSON value fit a type hint? Unknown hints accept anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple, set, frozenset) or hint in (set, frozenset):
        if not isinstance(value, list):
            return False
        args = typing.get_args(hint)
        if origin is list and args:
            return all(_matches(item, args[0]) for item in value)
        return True
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(hint)
        return not args or all(_matches(item, args[1]) for item in value.values())
    return True


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
