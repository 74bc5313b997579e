"""The JSON codec: strict JSON in and out, the same answers with orjson and with the stdlib.

Strict means what every answer can carry again: UTF-8, no NaN or Infinity, no number
past a double, no lone surrogate, integers exact, and a clean ``TypeError``/``ValueError``
(never a ``RecursionError``) for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from _results import ODD_RESULTS
from _results import nested as odd_nested
from _support import JSON_BACKENDS, use_json
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_tasks._core import codec


@pytest.fixture(params=JSON_BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The codec on each backend in turn."""
    use_json(request.param, monkeypatch)
    return str(request.param)


def nested(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return outer


def cyclic_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


# -- decoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "lone"),
    [
        (b'"\\ud800"', True),
        (b'{"k": "a\\udfffb"}', True),
        (b'{"\\udc00": 1}', True),
        ('{"k": "\ud800"}', True),  # text given as str may hold one unescaped
        (b'"\xed\xa0\x80"', False),  # a surrogate encoded as UTF-8 bytes: not UTF-8
        (b'"\xff"', False),
        (b"1e400", False),
        (b"[-1e400]", False),
        (b"1" + b"0" * 400, False),
        (b"NaN", False),
        (b'{"a": Infinity}', False),
        (b"-Infinity", False),
        (b"[" * 100_000, False),
        (b"[" * 5_000 + b"]" * 5_000, False),
        (b"[" * 1_025 + b"]" * 1_025, False),  # past MAX_DECODE_DEPTH, on every Python
        (b'{"a": 1,}', False),
        (b"", False),
        (b"\xef\xbb\xbf{}", False),
        (b'"\x00"', False),
    ],
)
def test_loads_refuses_what_cannot_be_encoded_again(backend: str, raw: bytes | str, lone: bool) -> None:
    with pytest.raises(ValueError) as caught:
        codec.loads(raw)
    assert isinstance(caught.value, codec.LoneSurrogate) is lone


def test_loads_keeps_surrogate_pairs_big_numbers_and_exact_integers(backend: str) -> None:
    assert codec.loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert codec.loads(b"1e308") == 1e308
    big = codec.loads(b"123456789012345678901234567890")
    assert big == 123456789012345678901234567890 and isinstance(big, int)
    assert codec.loads(b"-18446744073709551616") == -(2**64)
    for edge in (-(2**63) - 1, -(2**63), 2**63, 2**64 - 1, 2**64):  # orjson's int64 and uint64 ends
        exact = codec.loads(str(edge).encode())
        assert exact == edge and isinstance(exact, int), edge
    assert codec.loads('{"a": [1, 2.5, null, true, "\u00e9"]}') == {"a": [1, 2.5, None, True, "\u00e9"]}
    assert codec.loads(b"[" * 300 + b"]" * 300) == nested(300)


# -- encoding --------------------------------------------------------------------------


def test_dumps_writes_compact_utf8(backend: str) -> None:
    value = {"a": [1, 2.5, None, True, "\u00e9\U0001f600"], "b": {}}
    encoded = codec.dumps(value)
    assert encoded == '{"a":[1,2.5,null,true,"\u00e9\U0001f600"],"b":{}}'.encode()
    assert codec.loads(encoded) == value


def test_dumps_writes_keys_that_are_not_text_as_text_when_no_two_meet(backend: str) -> None:
    value = {1: "a", "2": "b", None: [{True: 0}], 2.5: 1}
    assert codec.dumps(value) == b'{"1":"a","2":"b","null":[{"true":0}],"2.5":1}'
    assert codec.dumps({"1": {"1": 1}, 'k,"1":': 2}) == b'{"1":{"1":1},"k,\\"1\\":":2}'


def test_dumps_keeps_integers_past_64_bits(backend: str) -> None:
    assert codec.dumps([2**70, -(2**70)]) == b"[1180591620717411303424,-1180591620717411303424]"


#: Values JSON cannot hold, by name.
NOT_JSON: dict[str, Any] = {
    "nan": float("nan"),
    "inf": [float("inf")],
    "nested -inf": {"a": {"b": (1, float("-inf"))}},
    "surrogate": "\ud800",
    "nested surrogate": {"a": ["\udfff"]},
    "surrogate key": {"\ud800": 1},
    "two keys written alike": {1: "a", "1": "b"},
    "nested keys written alike": [{"x": {True: 1, "true": 2}}],
    "float and text key alike": {2.5: 0, "2.5": 1},
    "bytes": b"bytes",
    "set": {1, 2},
    "object": object(),
    "nan in a dict subclass": type("Mapping", (dict,), {})(a=float("nan")),
    "inf in a list subclass": type("Sequence", (list,), {})([1, float("inf")]),
}


@pytest.mark.parametrize("value", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_dumps_refuses_what_is_not_json(backend: str, value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        codec.dumps(value)


@pytest.mark.parametrize("value", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_dumps_record_refuses_in_its_free_fields_what_is_not_json(backend: str, value: Any) -> None:
    record = {"id": "a", "message": None, "tags": ["x"], "result": value}
    with pytest.raises((TypeError, ValueError)):
        codec.dumps_record(record, ("result",))
    record["result"] = [1.5, None, {"k": "v"}]
    assert codec.dumps_record(record, ("result",)) == codec.dumps(record)


@pytest.mark.parametrize(
    "make", [cyclic_list, cyclic_dict, lambda: nested(100_000)], ids=["list", "dict", "deep"]
)
def test_dumps_refuses_cycles_and_nesting_too_deep_cleanly(backend: str, make: Callable[[], Any]) -> None:
    value = make()
    with pytest.raises((TypeError, ValueError)) as caught:
        codec.dumps(value)
    assert not isinstance(caught.value, RecursionError)


# -- the two backends ----------------------------------------------------------------------


DOCUMENTS: list[bytes | str] = [
    b'{"name": "count", "params": {"n": 3}}',
    b"[1, 2.5, -0.0, 1e308, 5e-324, true, false, null]",
    b'"\\ud83d\\ude00 \\u00e9 \\u0000"',
    b"18446744073709551616",
    b"-123456789012345678901234567890",
    b"12345678901234567890.5",
    b'{"a": 1, "a": 2}',
    b"[" * 300 + b"]" * 300,
    b"[" * 2_000 + b"]" * 2_000,
    b"1e400",
    b"1" + b"0" * 400,
    b"NaN",
    b'"\\ud800"',
    '"\ud800"',
    b'"\xed\xa0\x80"',
    b"\xef\xbb\xbf[]",
    b'{"a": }',
]

VALUES: list[Any] = [
    {"a": [1, 2.5, None, True, "\u00e9"]},
    2**70,
    {1: "int key"},
    (1, 2),
    nested(300),
    nested(100_000),
    cyclic_list(),
    float("nan"),
    [type("Fraction", (float,), {})(float("inf"))],
    type("Text", (str,), {})("a str subclass"),
    "\ud800",
    b"bytes",
]


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", call()
    except (TypeError, ValueError) as exc:
        return "refused", type(exc)


@pytest.mark.parametrize("document", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_both_backends_decode_alike(document: bytes | str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        use_json("orjson", patch)
        fast = outcome(lambda: codec.loads(document))
        use_json("stdlib", patch)
        plain = outcome(lambda: codec.loads(document))
    assert fast == plain
    if fast[0] == "value":  # equal values, and of equal types (an integer stays one)
        assert repr(fast[1]) == repr(plain[1])


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_both_backends_encode_alike(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        use_json("orjson", patch)
        fast = outcome(lambda: codec.dumps(value))
        use_json("stdlib", patch)
        plain = outcome(lambda: codec.dumps(value))
    assert fast == plain


@pytest.mark.parametrize("kind", [kind for kind in ODD_RESULTS if kind != "too_large"])  # (JSON, but big)
def test_dumps_refuses_what_is_not_json_with_the_same_error_on_both_paths(backend: str, kind: str) -> None:
    make, error_type = ODD_RESULTS[kind]
    with pytest.raises((TypeError, ValueError)) as caught:
        codec.dumps({"result": make()})
    assert type(caught.value).__name__ == error_type  # never RecursionError


def test_dumps_nests_as_deep_as_orjson_and_keeps_what_only_orjson_refuses(backend: str) -> None:
    assert codec.dumps(odd_nested(codec.MAX_DEPTH)).startswith(b"[[[")
    with pytest.raises(ValueError, match="nested deeper"):
        codec.dumps(odd_nested(codec.MAX_DEPTH + 1))
    encoded = codec.dumps({1: 10**30, "b": [True, None]})
    assert encoded == b'{"1":1000000000000000000000000000000,"b":[true,null]}'
    assert codec.loads(encoded) == {"1": 10**30, "b": [True, None]}


# -- loads_record: the same answers, faster for flat objects --------------------------------

RECORDS: list[bytes] = [
    b'{"id":"t1","seq":3,"kind":"log","text":"x","level":"info"}',
    b'{"id":"t1","seq":3,"kind":"output","text":"1234567890123456789012345"}',
    b'{"seq":18446744073709551615,"text":""}',
    b'{"seq":18446744073709551616}',
    b'{"seq":-9223372036854775809}',
    b'{"seq":12345678901234567890.5}',
    b'{"seq":1.0,"text":"a"}',
    b'{"seq":1e400}',
    b'{"text":"\\ud800"}',
    b'{"text":"\\ud83d\\ude00"}',
    b'{"text":"\xed\xa0\x80"}',
    b'{"text":NaN}',
    b'{"nested":{"seq":1}}',
    b'{"a":1,"a":"two"}',
    b'{"a":true,"b":null}',
    b"[1]",
    b'{"id":"t1",',
    b"",
]


@pytest.mark.parametrize("backend", JSON_BACKENDS)
@pytest.mark.parametrize("document", [*RECORDS, *DOCUMENTS], ids=range(len(RECORDS) + len(DOCUMENTS)))
def test_loads_record_answers_as_loads(
    backend: str, document: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_json(backend, monkeypatch)
    fast = outcome(lambda: codec.loads_record(document))
    assert fast == outcome(lambda: codec.loads(document))
    if fast[0] == "value":
        assert repr(fast[1]) == repr(codec.loads(document))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.text(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.from_regex(r"[0-9]{15,25}", fullmatch=True),
            st.booleans(),
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=6,
    )
)
def test_loads_record_decodes_any_flat_object_as_loads(record: dict[str, Any]) -> None:
    """Text with long runs of digits, integers past 64 bits and floats among the values."""
    document = json.dumps(record).encode()
    assert repr(codec.loads_record(document)) == repr(codec.loads(document))


@pytest.mark.parametrize("backend", JSON_BACKENDS)
def test_an_integer_of_thousands_of_digits_is_refused_in_plain_words(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_json(backend, monkeypatch)
    for digits in (310, 4_301, 50_000):
        with pytest.raises(ValueError, match="overflows a double") as refused:
            codec.loads(b"[-" + b"7" * digits + b"]")
        assert "sys." not in str(refused.value)
