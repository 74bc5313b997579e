"""Registered task functions: the context injected by annotation, client params checked
against the signature and type hints (422 with a message naming each fault), sync or async."""

from __future__ import annotations

import functools
from typing import Any, Literal

import pytest

from sse_tasks import InvalidRequest, TaskContext
from sse_tasks._core.registry import RegisteredTask

CONTEXT = object()  # stands for the run's context: call_with hands over whatever it is given


def build(func: Any, name: str | None = None, timeout: float | None = None) -> RegisteredTask:
    return RegisteredTask.build(func, name, timeout)


def call(registered: RegisteredTask, **params: Any) -> Any:
    return registered.call_with(CONTEXT, registered.validate(params))()


# -- the context, wherever it is declared ---------------------------------------------


def first(ctx: TaskContext, n: int) -> tuple[Any, int]:
    return ctx, n


def middle(n: int, report: TaskContext, label: str = "x") -> tuple[Any, int, str]:
    return report, n, label


def last(n: int, *, label: str, context_of_mine: TaskContext) -> tuple[Any, int, str]:
    return context_of_mine, n, label


def positional_only(ctx: TaskContext, /, n: int) -> tuple[Any, int]:
    return ctx, n


def defined_apart(annotation: str) -> Any:
    """A function whose module cannot resolve its context's annotation (a name imported
    only under ``TYPE_CHECKING``): the annotation is recognised by its text."""
    namespace: dict[str, Any] = {}
    exec(f"def apart(n: 'int', ctx: {annotation!r}):\n    return ctx, n", namespace)
    return namespace["apart"]


@pytest.mark.parametrize(
    "func",
    [
        first,
        middle,
        last,
        positional_only,
        defined_apart("TaskContext"),
        defined_apart("sse_tasks.TaskContext"),
    ],
    ids=["first", "middle", "keyword-only last", "positional-only", "by name", "by dotted name"],
)
def test_the_context_goes_to_the_parameter_annotated_for_it_at_any_position(func: Any) -> None:
    registered = build(func)
    params = {"n": 3, "label": "y"} if func is last else {"n": 3}
    names = [p.name for p in registered.params]
    assert registered.context_param is not None and registered.context_param not in names
    assert set(params) <= set(names)
    with pytest.raises(InvalidRequest, match=f"unexpected param '{registered.context_param}'"):
        registered.validate({**params, registered.context_param: {}})
    got = call(registered, **params)
    assert got[0] is CONTEXT and got[1] == 3


def test_a_function_that_asks_for_no_context_gets_none() -> None:
    def print_msg(name: str) -> str:
        return f"Hello {name}~"

    registered = build(print_msg)
    assert registered.context_param is None
    assert call(registered, name="Ithome") == "Hello Ithome~"


def test_a_parameter_named_ctx_but_annotated_otherwise_is_a_param() -> None:
    def takes(ctx: str) -> str:
        return ctx

    registered = build(takes)
    assert registered.context_param is None
    assert call(registered, ctx="a param") == "a param"


def test_an_unannotated_ctx_first_is_the_context_with_a_deprecation_warning() -> None:
    def legacy(ctx, n: int = 1):  # type: ignore[no-untyped-def]
        return ctx, n

    with pytest.warns(DeprecationWarning, match="annotate its first parameter as 'ctx: TaskContext'"):
        registered = build(legacy)
    assert call(registered, n=2) == (CONTEXT, 2)


def test_an_unannotated_ctx_elsewhere_is_a_param() -> None:
    def later(n: int = 1, ctx=None):  # type: ignore[no-untyped-def]
        return n, ctx

    registered = build(later)  # no warning (pytest turns warnings into errors)
    assert registered.context_param is None
    assert call(registered, ctx="given") == (1, "given")


def two_contexts(a: TaskContext, b: TaskContext) -> None: ...
def star_args(ctx: TaskContext, *args: int) -> None: ...
def positional_param(ctx: TaskContext, n: int, /) -> None: ...
def positional_before_context(n: int, ctx: TaskContext, /) -> None: ...


@pytest.mark.parametrize(
    ("func", "error"),
    [
        (two_contexts, "two_contexts takes more than one TaskContext"),
        (star_args, r"star_args cannot take \*args"),
        (positional_param, "positional_param: param 'n' is positional-only"),
        (positional_before_context, "positional_before_context: param 'n' is positional-only"),
    ],
)
def test_signatures_clients_cannot_call_are_refused_by_name(func: Any, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        build(func)


@pytest.mark.parametrize("name", ["x" * 201, "bad\ud800", "\udfff"])
def test_a_name_must_be_1_to_200_characters_of_text(name: str) -> None:
    with pytest.raises(ValueError, match="must be 1 to 200 characters of text"):
        build(first, name=name)


def test_a_function_without_a_name_needs_one_given() -> None:
    nameless = functools.partial(plain_function)  # a partial has no __name__
    with pytest.raises(AttributeError):
        build(nameless)
    assert build(nameless, name="given").name == "given"


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        build(first, timeout=timeout)


def test_a_name_defaults_to_the_functions_and_may_be_given() -> None:
    assert build(first).name == "first"
    assert build(first, name="other").name == "other"
    assert build(first, timeout=2.5).timeout == 2.5


def test_only_callables_can_be_tasks() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        build("not a function")


# -- params checked against the signature and hints ----------------------------------


def typed(
    ctx: TaskContext,
    count: int,
    ratio: float = 0.5,
    flag: bool = False,
    label: str | None = None,
    mode: Literal["fast", "slow"] = "fast",
    tags: list[str] | None = None,
    weights: dict[str, float] | None = None,
    anything: Any = None,
    untyped=None,  # type: ignore[no-untyped-def]
    *,
    pair: tuple[int, int] | None = None,
) -> dict[str, Any]:
    return {"count": count}


@pytest.mark.parametrize(
    "params",
    [
        {"count": 1},
        {"count": -(2**70), "ratio": 1, "flag": True, "label": None, "mode": "slow"},
        {"count": 0, "ratio": 2.5, "label": "x", "tags": [], "weights": {"a": 1, "b": 0.5}},
        {"count": 1, "anything": {"nested": [1, "x"]}, "untyped": [None], "pair": [1, 2]},
    ],
)
def test_params_that_fit_the_signature_are_accepted_as_given(params: dict[str, Any]) -> None:
    registered = build(typed)
    assert registered.validate(params) == params
    assert registered.validate(params) is not params  # a copy: the caller's dict is not kept


@pytest.mark.parametrize(
    ("params", "messages"),
    [
        ({}, ["missing param 'count'"]),
        ({"count": "1"}, ["param 'count' must be int"]),
        ({"count": 1.0}, ["param 'count' must be int"]),
        ({"count": True}, ["param 'count' must be int"]),
        ({"count": 1, "ratio": "0.5"}, ["param 'ratio' must be float"]),
        ({"count": 1, "ratio": False}, ["param 'ratio' must be float"]),
        ({"count": 1, "flag": 0}, ["param 'flag' must be bool"]),
        ({"count": 1, "label": 5}, ["param 'label' must be str | None"]),
        ({"count": 1, "mode": "medium"}, ["param 'mode' must be"]),
        ({"count": 1, "tags": ["a", 1]}, ["param 'tags' must be"]),
        ({"count": 1, "tags": "a"}, ["param 'tags' must be"]),
        ({"count": 1, "weights": {"a": "heavy"}}, ["param 'weights' must be"]),
        ({"count": 1, "weights": [1]}, ["param 'weights' must be"]),
        ({"count": 1, "pair": "1,2"}, ["param 'pair' must be"]),
        ({"count": 1, "ctx": {}}, ["unexpected param 'ctx'"]),
        ({"count": "x", "nope": 1, "other": 2}, ["unexpected param 'nope'", "unexpected param 'other'"]),
    ],
)
def test_params_that_do_not_fit_are_refused_with_a_message_naming_each_fault(
    params: dict[str, Any], messages: list[str]
) -> None:
    registered = build(typed)
    with pytest.raises(InvalidRequest) as caught:
        registered.validate(params)
    assert caught.value.status_code == 422 and caught.value.code == "invalid_request"
    assert caught.value.message.startswith("task 'typed': ")
    for message in messages:
        assert message in caught.value.message


def test_every_fault_is_named_at_once() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build(typed).validate({"count": "x", "flag": 1, "nope": 0})
    assert caught.value.message == (
        "task 'typed': unexpected param 'nope'; param 'count' must be int; param 'flag' must be bool"
    )


@pytest.mark.parametrize("params", [None, [], [1], "count=1", 1])
def test_params_must_be_an_object(params: Any) -> None:
    with pytest.raises(InvalidRequest, match="'params' must be a JSON object"):
        build(typed).validate(params)


def test_keyword_arguments_accept_any_other_param() -> None:
    def open_ended(ctx: TaskContext, n: int, **options: Any) -> dict[str, Any]:
        return {"n": n, **options}

    registered = build(open_ended)
    assert registered.accepts_any
    assert call(registered, n=1, colour="blue", depth=[2]) == {"n": 1, "colour": "blue", "depth": [2]}
    with pytest.raises(InvalidRequest, match="param 'n' must be int"):
        registered.validate({"n": "1", "colour": "blue"})


def test_hints_resolved_one_by_one_when_one_cannot_be() -> None:
    namespace: dict[str, Any] = {}
    # Evaluated annotations, none, and a name only a type checker could resolve.
    source = "def mixed(plain, n: int, later: 'Undefined'):\n    return plain, n, later"
    exec(compile(source, "<mixed>", "exec", dont_inherit=True), namespace)  # no postponed annotations
    registered = build(namespace["mixed"])
    assert registered.validate({"plain": [1], "n": 1, "later": "x"}) == {"plain": [1], "n": 1, "later": "x"}
    with pytest.raises(InvalidRequest, match="param 'n' must be int"):
        registered.validate({"plain": None, "n": "1", "later": None})


def test_a_hint_that_cannot_be_resolved_leaves_that_param_unchecked() -> None:
    def partly(n: int, later: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    registered = build(partly)
    assert registered.validate({"n": 1, "later": {"any": "thing"}}) == {"n": 1, "later": {"any": "thing"}}
    with pytest.raises(InvalidRequest, match="param 'n' must be int"):
        registered.validate({"n": "1", "later": 0})


# -- positional arguments (the BackgroundTask form) -----------------------------------


def test_positional_arguments_bind_to_params_by_name() -> None:
    registered = build(middle)
    assert registered.bind((3,), {"label": "y"}) == {"n": 3, "label": "y"}
    assert registered.bind((3, "y"), {}) == {"n": 3, "label": "y"}
    with pytest.raises(TypeError, match="takes 2 positional params, got 3"):
        registered.bind((1, "y", "z"), {})
    with pytest.raises(TypeError, match="multiple values for 'n'"):
        registered.bind((1,), {"n": 2})
    keyword_only = build(last)
    with pytest.raises(TypeError, match="takes 1 positional params, got 2"):
        keyword_only.bind((1, "label"), {})


# -- sync and async ------------------------------------------------------------------


class AsyncCallable:
    async def __call__(self, n: int) -> int:
        return n


class SyncCallable:
    def __call__(self, n: int) -> int:
        return n


async def coroutine_function(n: int) -> int:
    return n


def plain_function(n: int) -> int:
    return n


@pytest.mark.parametrize(
    ("func", "is_async"),
    [
        (coroutine_function, True),
        (plain_function, False),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (functools.partial(coroutine_function), True),
        (functools.partial(plain_function), False),
    ],
    ids=["async def", "def", "async __call__", "__call__", "partial of async", "partial of def"],
)
@pytest.mark.anyio
async def test_async_functions_are_awaited_and_plain_ones_are_not(func: Any, is_async: bool) -> None:
    registered = build(func, name="f")
    assert registered.is_async is is_async
    result = call(registered, n=7)
    assert (await result if is_async else result) == 7
