"""Property tests: arbitrary methods, paths, ids, queries, headers and bodies at every endpoint.

Whatever arrives: never a 500, never a stream that hangs, nothing created by a
rejected request. Request/response endpoints run in process (on the live server's
loop, through ``ASGITransport``); streams over a real socket with short deadlines.
Then every field a client sends is fuzzed on its own, each answer checked against a
model of the contract's, while a stream opened before it all must keep going.
Misbehaviour on the wire itself (lying framing, raw bytes, dropped connections) is
in ``test_fuzz_live``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote

import anyio
import httpx
import pytest
from _support import JSON_BACKENDS, HubFactory, LiveServer, in_process, use_json, wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sse_tasks import TaskContext, TaskHub, TaskTokens
from sse_tasks._core import codec
from sse_tasks.demo import register_demo_tasks

SECRET = "fuzzing-secret-of-enough-length"
FUZZ = settings(
    max_examples=55,
    deadline=None,
    database=None,
    # CI replays the same examples every run (a red CI must be reproducible); a local
    # run explores new ones.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    hub: TaskHub
    app: Any
    server: LiveServer
    ids: list[str]
    tokens: list[str]


@pytest.fixture(params=["open", "guarded"])
def target(
    request: pytest.FixtureRequest, make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> Iterator[Target]:
    """A live hub with a finished, a failed and a running task; ``guarded`` adds tokens,
    CORS and metrics."""
    options: dict[str, Any] = {"max_queued": 50, "max_streams_per_client": 1000}
    if request.param == "guarded":
        options.update(
            tokens=SECRET, cors_origins=["https://ok.example"], cors_credentials=True, metrics=True
        )
    hub = make_hub(**options)
    app = hub.app
    server = live_server(hub, app)
    ids, tokens = [], []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for body in (
            {"name": "sleep", "params": {"seconds": 0}},
            {"name": "fail"},
            {"name": "sleep", "params": {"seconds": 600}},
        ):
            created = http.post("/tasks", json=body).json()
            ids.append(created["id"])
            tokens.append(created.get("token", ""))
    yield Target(hub, app, server, ids, tokens)


def ids(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(target.ids),
        st.text(max_size=40),
        st.sampled_from(["", "..", "%00", "x" * 300, "a/b", "<script>", "\u0000", "\ud7ff" * 3]),
    )


def tokens(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(target.tokens), st.text(max_size=60))


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SUBMISSIONS = st.fixed_dictionaries(
    {"name": st.sampled_from(["sleep", "count", "fail", "nope"]) | st.text(max_size=10)},
    optional={
        "params": st.dictionaries(st.sampled_from(["seconds", "n", "interval", "message", "x"]), JSON_VALUES)
    },
)


@st.composite
def requests(draw: st.DrawFn, target: Target, streams: bool) -> dict[str, Any]:
    task_id = quote(draw(ids(target)), safe="")
    if streams:
        path = draw(st.sampled_from([f"/tasks/{task_id}/events", "/events"]))
        method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "OPTIONS"]))
    else:
        path = draw(
            st.sampled_from(
                [
                    "/tasks",
                    "/tasks",
                    f"/tasks/{task_id}",
                    f"/tasks/{task_id}",
                    "/metrics",
                    "/openapi.json",
                    "/",
                    f"/{task_id}",
                    f"/tasks/{task_id}/x",
                ]
            )
        )
        method = draw(
            st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
            | st.from_regex(r"[A-Z]{1,8}", fullmatch=True)
        )
    query_keys = st.sampled_from(["state", "name", "limit", "task", "token", "last_event_id"]) | st.text(
        max_size=8
    )
    query_values = st.one_of(
        st.text(max_size=30),
        tokens(target),
        st.sampled_from(target.ids),
        st.sampled_from(["0", "-1", "1000000", "running"]),
    )
    query = draw(st.lists(st.tuples(query_keys, query_values), max_size=5))
    header_names = st.sampled_from(
        [
            "content-type",
            "last-event-id",
            "authorization",
            "cookie",
            "origin",
            "access-control-request-method",
            "accept",
            "x-any",
        ]
    )
    header_values = st.one_of(
        HEADER_TEXT,
        st.sampled_from(["application/json", "text/plain", "application/x+json; charset=utf-8"]),
        tokens(target).map(lambda t: f"Bearer {t}"),
        tokens(target).map(lambda t: f"sse_tasks_token={t}"),
    ).filter(lambda v: v == v.strip() and all(" " <= c <= "~" for c in v))  # what a client can send
    headers = draw(st.dictionaries(header_names, header_values, max_size=5))
    body = draw(
        st.one_of(
            st.binary(max_size=200),
            SUBMISSIONS.map(lambda d: json.dumps(d).encode()),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        )
    )
    return {"method": method, "url": path, "params": query, "headers": headers, "content": body}


@FUZZ
@given(data=st.data())
def test_request_response_endpoints_never_fail(target: Target, data: st.DataObject) -> None:
    request = data.draw(requests(target, streams=False))
    queued_before = target.hub.stats.tasks["queued"]

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=target.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
            with anyio.fail_after(10):
                return await client.request(**request)

    response: httpx.Response = target.server.call(send())
    assert response.status_code < 500, (request, response.text)
    created = target.hub.stats.tasks["queued"] - queued_before
    if response.status_code == 202 and request["method"] == "POST":
        assert created == 1
    else:
        assert created == 0, (request, response.status_code)
    if response.status_code >= 400 and request["method"] not in ("OPTIONS", "HEAD"):
        assert response.headers["content-type"].startswith("application/json"), request
        assert response.json()["error"]["code"]


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_stream_endpoints_never_fail_or_hang(target: Target, data: st.DataObject) -> None:
    request = data.draw(requests(target, streams=True))
    request["headers"].pop("content-type", None)
    timeout = httpx.Timeout(5.0)
    with httpx.Client(base_url=target.server.url, timeout=timeout) as http:
        with http.stream(**request) as response:
            assert response.status_code < 500, request
            if response.status_code == 200 and request["method"] == "GET":
                assert response.headers["content-type"].startswith("text/event-stream")
                first = next(response.iter_raw())  # the retry frame comes at once, or ReadTimeout
                assert first.startswith(b"retry: ")
            else:
                response.read()
    # A stream the client dropped is released promptly.
    wait_until(lambda: target.hub.open_streams == 0, "the dropped stream's release", 2, interval=0.01)


# =====================================================================================
# Every field a client sends, each answer checked against a model of the contract.
#
# One hub per test holds a succeeded, a failed and a running task, and a ``/events``
# stream opened before the fuzzing is read in a thread: after the run it must still
# carry a new task's events. Request/response endpoints run in process on the
# server's loop, streams over a real socket; the broker is memory and a real Redis.
# =====================================================================================

ANSWERS = frozenset({200, 202, 204, 400, 401, 403, 404, 405, 408, 409, 410, 413, 415, 422})
BODY_LIMIT = 64 * 1024  # the hub's default max_body_size
MODEL = settings(FUZZ, max_examples=70)


async def typed(
    ctx: TaskContext,
    flag: bool,
    items: list[int],
    choice: Literal["a", "b"] = "a",
    maybe: int | None = None,
    mapping: dict[str, float] | None = None,
) -> None:
    """A task with one param of each kind of type hint the hub checks."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: What each registered task accepts: param -> (required, fits).
SIGNATURES: dict[str, dict[str, tuple[bool, Callable[[Any], bool]]]] = {
    "sleep": {"seconds": (False, _number)},
    "count": {"n": (False, _integer), "interval": (False, _number)},
    "fail": {"message": (False, lambda v: isinstance(v, str))},
    "typed": {
        "flag": (True, lambda v: isinstance(v, bool)),
        "items": (True, lambda v: isinstance(v, list) and all(_integer(i) for i in v)),
        "choice": (False, lambda v: isinstance(v, str) and v in ("a", "b")),
        "maybe": (False, lambda v: v is None or _integer(v)),
        "mapping": (False, lambda v: v is None or (isinstance(v, dict) and all(map(_number, v.values())))),
    },
}
STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def _pct(raw: bytes) -> str:
    """Every byte percent-encoded: what a client may put in a path segment or a query."""
    return "".join(f"%{byte:02X}" for byte in raw)


def _wire(text: str) -> bytes:
    """``text`` as UTF-8, a lone surrogate as its three (invalid) bytes, e.g. ED A0 80."""
    return text.encode("utf-8", "surrogatepass")


def _ascii_digits(raw: str, max_digits: int) -> int | None:
    return int(raw) if 0 < len(raw) <= max_digits and raw.isascii() and raw.isdigit() else None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# -- the model: what the contract says each request gets ----------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} overflows a double")
    return value


def reference_json(body: bytes) -> tuple[str, Any]:
    """``body`` judged by RFC 8259 and I-JSON (RFC 7493): ``invalid``, ``surrogate`` (a lone
    surrogate escape: not text), ``huge`` (an integer beyond a double) or ``ok``."""
    huge: list[int] = []

    def integer(text: str) -> int:  # judged as parsed: a duplicate key may drop it later
        value = int(text)
        if abs(value) > sys.float_info.max:
            huge.append(value)
        return value

    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite, parse_int=integer
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "invalid", None
    if huge:  # refused while parsing, before any string is looked at
        return "huge", value
    if _depth(value) > codec.MAX_DECODE_DEPTH:  # (Python's json goes deeper from 3.12 on)
        return "invalid", None
    verdict = "ok"
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                return "surrogate", value
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif _integer(item) and abs(item) > sys.float_info.max:
            verdict = "huge"
    return verdict, value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def expected_shape(doc: Any) -> int:
    """The answer to a well-formed JSON body: 202, or 404/422 with the first thing wrong."""
    if not isinstance(doc, dict) or set(doc) - {"name", "params"} or not isinstance(doc.get("name"), str):
        return 422
    signature = SIGNATURES.get(doc["name"])
    if signature is None:
        return 404
    params = doc.get("params", {})
    if not isinstance(params, dict) or set(params) - set(signature):
        return 422
    for name, (required, fits) in signature.items():
        if (name in params and not fits(params[name])) or (name not in params and required):
            return 422
    return 202


def _first(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def expected_submission(headers: list[tuple[bytes, bytes]], body: bytes) -> set[int]:
    media = (_first(headers, b"content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return {415}
    length = _first(headers, b"content-length")
    if length is not None:
        declared = _ascii_digits(length.strip(), 19)
        if declared is None:
            return {400}
        if declared > BODY_LIMIT:
            return {413}
    if len(body) > BODY_LIMIT:
        return {413}
    verdict, doc = reference_json(body)
    if verdict == "invalid":
        return {400}
    if verdict == "surrogate":
        return {422}
    if verdict == "huge":  # I-JSON: an integer beyond a double, like 1e400
        return {400}
    return {expected_shape(doc)}  # integers exact, with either decoder


def check_answer(response: httpx.Response, request: Any) -> None:
    """Any answer: a status from the contract; an error in the JSON error shape."""
    assert response.status_code in ANSWERS, (request, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), request
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"], request
        assert isinstance(error["message"], str) and error["message"], request


# -- the hub under test ---------------------------------------------------------------------


class Watcher:
    """A ``/events`` stream opened before the fuzzing, read in a thread until the server ends it.

    Frames are split on blank lines of the raw body (not ``str.splitlines``, which also
    breaks at U+2028 and U+0085 inside the JSON), and every ``data`` must be JSON.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[str, str, Any]] = []  # (id, type, data), in stream order
        self.problems: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, name="fuzz-watcher", daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the watching stream did not open"

    def _read(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=httpx.Timeout(10.0, read=None)) as http:
                with http.stream("GET", "/events") as response:
                    if response.status_code != 200:
                        self.problems.append(f"/events answered {response.status_code}")
                        return
                    buffer = b""
                    for chunk in response.iter_raw():
                        buffer += chunk
                        *frames, buffer = buffer.split(b"\n\n")
                        for frame in frames:
                            self._frame(frame)
        except Exception as exc:  # a cut stream is what the tests look for
            self.problems.append(f"the stream failed: {exc!r}")
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()
            self._opened.set()

    def _frame(self, frame: bytes) -> None:
        fields: dict[str, str] = {}
        for line in frame.decode("utf-8").split("\n"):
            if line.startswith(":"):
                continue  # a heartbeat
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "retry" in fields:
            self._opened.set()
        if "data" in fields:
            event = (fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"]))
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def saw(self, task_id: str, event_type: str, timeout: float = 20.0) -> bool:
        """Wait until the stream carried ``event_type`` of ``task_id`` (False if it ended first)."""

        def seen() -> bool:
            return any(e[1] == event_type and e[2].get("id") == task_id for e in self.events)

        with self._changed:
            self._changed.wait_for(lambda: seen() or self.ended, timeout)
            return seen()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


class Loud(logging.Handler):
    """Collects every record above WARNING, from the server's thread too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname}: {record.getMessage()}")


@dataclass
class Served:
    hub: TaskHub
    app: Any
    server: LiveServer
    watcher: Watcher
    states: dict[str, str]  # seeded task id -> its state
    last_ids: dict[str, str]  # seeded task id -> the id of its last event
    running: str
    loud: Loud

    def send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]] | None = None, content: Any = b""
    ) -> httpx.Response:
        return send_in_process(self.server, self.app, method, url, headers, content)

    def created(self) -> int:
        """Tasks this hub has created so far."""
        return int(self.hub.stats.tasks["queued"])

    def listed(self) -> int:
        """``GET /tasks`` answers 200 with a valid body; the number of tasks it lists."""
        response = self.send("GET", "/tasks?limit=1000")
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["cursor"], str) and isinstance(body["tasks"], list)
        assert all(isinstance(t["id"], str) and t["state"] in STATES for t in body["tasks"])
        return len(body["tasks"])

    def unchanged(self) -> None:
        """The running task still runs and only the watcher's stream is open."""
        assert self.server.call(self.hub.get(self.running)).state.value == "running"
        streams_closed(self.hub, baseline=1)

    def still_streaming(self) -> None:
        """The watcher's stream, opened before the fuzzing, carries a new task to its end."""
        with httpx.Client(base_url=self.server.url, timeout=10) as http:
            created = http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}})
            assert created.status_code == 202, created.text
        assert self.watcher.saw(created.json()["id"], "task.succeeded"), self.watcher.problems
        assert not self.watcher.ended and not self.watcher.problems, self.watcher.problems
        assert self.loud.lines == []


def send_in_process(
    server: LiveServer,
    app: Any,
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    content: Any = b"",
) -> httpx.Response:
    """One request through ``ASGITransport`` on the server's loop; 10 s at most."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
            with anyio.fail_after(10):
                return await client.request(method, url, headers=headers or [], content=content)

    response: httpx.Response = server.call(send())
    return response


def streams_closed(hub: TaskHub, baseline: int = 0) -> None:
    """Wait (bounded) until the hub holds only ``baseline`` open streams."""
    wait_until(lambda: hub.open_streams <= baseline, "streams to close", 10, interval=0.01)
    assert hub.open_streams == baseline


@pytest.fixture
def served(make_hub: HubFactory, live_server: Callable[..., LiveServer]) -> Iterator[Served]:
    hub = make_hub(max_queued=1000, concurrency=64, shutdown_grace=0)
    hub.register(typed)
    app = hub.app
    server = live_server(hub, app)
    watcher = Watcher(server.url)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        seeds = [
            ({"name": "sleep", "params": {"seconds": 0}}, "task.succeeded"),
            ({"name": "fail"}, "task.failed"),
            ({"name": "sleep", "params": {"seconds": 600}}, "task.running"),
        ]
        ids = []
        for body, reached in seeds:
            task_id = http.post("/tasks", json=body).json()["id"]
            assert watcher.saw(task_id, reached)
            ids.append(task_id)
    snapshots = [server.call(hub.get(task_id)) for task_id in ids]
    served = Served(
        hub,
        app,
        server,
        watcher,
        states={t.id: t.state.value for t in snapshots},
        last_ids={t.id: str(t.event_id) for t in snapshots},
        running=ids[2],
        loud=Loud(),
    )
    # The root logger hears the hub and asyncio; uvicorn's loggers do not propagate (and
    # are configured when the server starts, so listen to them only now).
    listened = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in listened:
        logger.addHandler(served.loud)
    try:
        yield served
    finally:
        for logger in listened:
            logger.removeHandler(served.loud)
        server.call(hub.shutdown())  # the watcher's stream ends with the hub
        watcher.join()


# -- POST /tasks: every part of the body and its headers ------------------------------------

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
ANY_CHAR = st.characters(exclude_categories=())  # the whole of Unicode, lone surrogates included
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=10),
    st.lists(ANY_CHAR | SURROGATE, max_size=5).map("".join),
    st.sampled_from(
        [
            "",
            "\x00",
            "\ufeff",
            "\u2028",
            "\x85",
            "\n\ndata: x\n\n",
            "\ud83d\ude00",
            "\ud83d",
            "\udc00\ud800",
            "é",
        ]
    ),
)


def _json_string(text: str, escaped: bool) -> bytes:
    """``text`` as a JSON string; a lone surrogate as a ``\\udXXX`` escape, or as raw bytes."""
    if escaped:
        return json.dumps(text).encode()
    return _wire(json.dumps(text, ensure_ascii=False))


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: list[tuple[bytes, bytes]], separator: bytes = b",") -> bytes:
    return b"{" + separator.join(k + b":" + v for k, v in pairs) + b"}"


STRINGS = st.builds(_json_string, TEXT, st.booleans())
NUMBERS = st.one_of(
    st.sampled_from(
        [
            "0", "-0", "0.0", "-0.0", "1e-400", "-1e-400", "5e-324", "1e308", "1.7976931348623157e308",
            "1e400", "-1E+400", "1" + "0" * 400, "-" + "9" * 400, "9" * 5000,
            "9007199254740993", "18446744073709551616", "-9223372036854775809",
            "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x10", "1e", "--1",
        ]
    ),
    st.integers(-2, 5).map(str),
    st.floats(0, 0.01).map(repr),
).map(str.encode)  # fmt: skip
SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from([b"true", b"false", b"null"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4).map(_array) | st.lists(st.tuples(STRINGS, inner), max_size=4).map(_object)
    ),
    max_leaves=8,
)
DEEP = st.builds(
    lambda depth, inner: b"[" * depth + inner + b"]" * depth,
    st.sampled_from([3, 100, 400, 3000, 30000]),
    SCALARS,
)
PARAM_NAMES = [*sorted({p for signature in SIGNATURES.values() for p in signature}), "x", ""]
KEYS = st.builds(_json_string, st.sampled_from(PARAM_NAMES) | TEXT, st.booleans())
PARAM_VALUES = st.one_of(
    SCALARS,
    SCALARS,
    VALUES,
    DEEP,
    st.lists(NUMBERS, max_size=3).map(_array),
    st.sampled_from([b'"a"', b'"b"']),
)
NAMES = st.one_of(
    st.sampled_from([*SIGNATURES, *SIGNATURES, "nope", "", "FAIL", "fail ", "fail\x00"]).map(
        lambda n: json.dumps(n).encode()
    ),
    STRINGS,
    VALUES,
)


@st.composite
def submissions(draw: st.DrawFn) -> bytes:
    """A JSON object mostly like a submission: a name, params, extra fields, duplicate keys."""
    pairs = []
    if draw(st.integers(0, 9)):
        pairs.append((b'"name"', draw(NAMES)))
    if draw(st.integers(0, 3)):
        pairs.append((b'"params"', draw(st.lists(st.tuples(KEYS, PARAM_VALUES), max_size=4).map(_object))))
    elif draw(st.booleans()):
        pairs.append((b'"params"', draw(PARAM_VALUES)))
    if not draw(st.integers(0, 4)):  # extra fields, or a repeated one (the last one counts)
        extra = st.sampled_from([b'"name"', b'"params"']) | KEYS
        pairs.extend(draw(st.lists(st.tuples(extra, PARAM_VALUES), min_size=1, max_size=2)))
    separator = draw(st.sampled_from([b",", b" , ", b",\n\t"]))
    return _object(draw(st.permutations(pairs)), separator)


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` as is, or spoiled: BOM, UTF-16, a stray byte, cut short, padded past the limit."""
    how = draw(st.sampled_from(["as is"] * 10 + ["bom", "utf-16", "insert", "cut", "append", "pad", "space"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "utf-16":
        return body.decode("latin-1").encode("utf-16")
    if how == "insert":
        at = draw(st.integers(0, len(body)))
        stray = draw(
            st.sampled_from(
                [
                    b"\x00",
                    b"\xed\xa0\x80",
                    b"\xed\xbf\xbf",
                    b"\xc0\xaf",
                    b"\xff",
                    b"\x80",
                    b"\xf4\x90\x80\x80",
                    b"\xef\xbb\xbf",
                    b'"',
                    b"\\",
                ]
            )
        )
        return body[:at] + stray + body[at:]
    if how == "cut":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if how == "append":
        return body + draw(st.sampled_from([b"x", b"}", b",", b"\x00", b" {}", b"\n"]))
    if how == "pad":  # still valid JSON, but over the limit
        return body + b" " * max(BODY_LIMIT + 1 - len(body), 0)
    if how == "space":
        return b" \t\r\n" + body + b"\r\n"
    return body


CONTENT_TYPES = st.sampled_from(
    [b"application/json"] * 6
    + [
        b"application/json; charset=utf-8", b"Application/JSON", b"application/problem+json",
        b"application/json;charset=latin-1", b" application/json ", b"application/json\xa0",
        b"application/json\xff", b"text/plain", b"", b"application/jsonx", b"text/json", b"json",
        b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x", b"*/*",
        b"application/json, text/plain",
    ]
)  # fmt: skip


@dataclass
class Submission:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool  # sent without Content-Length, as a stream

    async def chunks(self) -> AsyncIterator[bytes]:
        half = len(self.body) // 2
        yield self.body[:half]
        yield self.body[half:]


SMALL_ARRAYS = st.lists(st.sampled_from([b"0", b"1", b"-0", b"2"]), max_size=3).map(_array)
TEXTS = st.text(max_size=10).map(lambda t: json.dumps(t).encode())


def _mostly(fitting: st.SearchStrategy[bytes], other: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(fitting, fitting, fitting, other)


#: Values each param mostly accepts (and sometimes not), so that many submissions are valid.
FITTING = {
    "seconds": _mostly(st.sampled_from([b"0", b"0.001", b"-0", b"1e-400", b"0.0", b"-0.0"]), NUMBERS),
    "n": _mostly(st.sampled_from([b"0", b"1", b"2"]), NUMBERS),
    "interval": _mostly(st.sampled_from([b"0", b"0.001", b"1e-400"]), NUMBERS),
    "message": _mostly(TEXTS, STRINGS),
    "flag": _mostly(st.sampled_from([b"true", b"false"]), SCALARS),
    "items": _mostly(SMALL_ARRAYS, PARAM_VALUES),
    "choice": _mostly(st.sampled_from([b'"a"', b'"b"']), SCALARS),
    "maybe": _mostly(st.sampled_from([b"null", b"1", b"-0"]), NUMBERS),
    "mapping": _mostly(
        st.lists(st.tuples(TEXTS, st.sampled_from([b"0", b"1.5"])), max_size=3).map(_object), PARAM_VALUES
    ),
}


@st.composite
def plausible_submissions(draw: st.DrawFn) -> bytes:
    """A registered task's name and params that mostly fit its signature."""
    name = draw(st.sampled_from(sorted(SIGNATURES)))
    params = [
        (json.dumps(param).encode(), draw(FITTING[param]))
        for param, (required, _) in SIGNATURES[name].items()
        if required or draw(st.booleans())
    ]
    if not draw(st.integers(0, 5)):
        params.append(draw(st.tuples(KEYS, PARAM_VALUES)))
    pairs = [(b'"name"', json.dumps(name).encode())]
    if params or draw(st.booleans()):
        pairs.append((b'"params"', _object(draw(st.permutations(params)))))
    return _object(draw(st.permutations(pairs)))


BODIES = st.one_of(
    plausible_submissions(), plausible_submissions(), plausible_submissions(),
    submissions(), submissions(), VALUES, DEEP, st.binary(max_size=40),
)  # fmt: skip


@st.composite
def submission_requests(draw: st.DrawFn) -> Submission:
    body = draw(mutated(draw(BODIES)))
    kind = draw(st.sampled_from(["json"] * 7 + ["other", "none", "two"]))
    types = {"json": [b"application/json"], "none": []}.get(kind) or draw(
        st.lists(CONTENT_TYPES, min_size=1, max_size=1 if kind == "other" else 2)
    )
    headers = [(b"content-type", t) for t in types]
    size = len(body)
    lengths = draw(st.sampled_from(["auto"] * 6 + ["chunked", "lie"]))
    if lengths == "lie":  # shorter, longer, not ASCII digits, negative, huge, several
        values = [
            str(size), str(max(size - 1, 0)), str(size + 5), "0", "²", "\u0661\u0662", "-1", "9" * 19,
            "9" * 30, "1 2", f" {size} ", f"+{size}", "0x10", f"{size},{size}", "", "1e3",
            str(BODY_LIMIT + 1),
        ]  # fmt: skip
        headers += [
            (b"content-length", v.encode())
            for v in draw(st.lists(st.sampled_from(values), min_size=1, max_size=2))
        ]
    return Submission(draw(st.permutations(headers)), body, chunked=lengths == "chunked")


@pytest.mark.parametrize("decoder", JSON_BACKENDS)
def test_every_field_of_a_submission_gets_the_answer_the_contract_gives(
    served: Served, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies over the whole of Unicode (lone surrogates as escapes and as raw bytes),
    invalid UTF-8, NUL, odd and huge numbers, NaN, deep nesting, duplicate keys, a BOM,
    wrong types, media types and Content-Length lies: each answered as the contract says,
    and only a 202 creates a task. With orjson and with the stdlib's decoder."""
    use_json(decoder, monkeypatch)

    @MODEL
    @given(request=submission_requests())
    def fuzz(request: Submission) -> None:
        created, listed = served.created(), served.listed()
        content = request.chunks() if request.chunked else request.body
        response = served.send("POST", "/tasks", headers=request.headers, content=content)
        check_answer(response, request)
        assert response.status_code in expected_submission(request.headers, request.body), (
            request,
            response.text[:300],
        )
        new = 1 if response.status_code == 202 else 0
        assert served.created() - created == new, request
        assert served.listed() - listed == new, request
        if new:
            assert response.headers["location"] == f"/tasks/{response.json()['id']}"
        served.unchanged()

    fuzz()
    served.still_streaming()


# -- GET /tasks: state, name, limit -------------------------------------------------------------

QUERY_TEXT = st.one_of(TEXT.map(_wire), st.binary(max_size=8))


@st.composite
def list_queries(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    values = {
        b"state": st.sampled_from([s.encode() for s in STATES])
        | st.sampled_from([b"", b"RUNNING", b"running ", b"run\x00"]),
        b"name": st.sampled_from([n.encode() for n in SIGNATURES]) | QUERY_TEXT,
        b"limit": st.sampled_from(
            [
                b"1",
                b"2",
                b"100",
                b"1000",
                b"1001",
                b"0",
                b"-1",
                b"01",
                "²".encode(),
                "\u0661\u0662".encode(),
                b"9" * 30,
                b"1e2",
                b" 5",
                b"",
            ]
        ),
    }
    keys = st.sampled_from(sorted(values)) | QUERY_TEXT
    pairs = []
    for key in draw(st.lists(keys, max_size=5)):
        pairs.append((key, draw(values.get(key, QUERY_TEXT))))
    return pairs


def test_every_query_parameter_of_the_task_list_gets_a_clean_answer(served: Served) -> None:
    @MODEL
    @given(pairs=list_queries())
    def fuzz(pairs: list[tuple[bytes, bytes]]) -> None:
        query = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in pairs)
        response = served.send("GET", f"/tasks?{query}")
        check_answer(response, pairs)
        decoded = dict(parse_qsl(query, keep_blank_values=True))  # as Starlette reads it: the last one counts
        state, name, raw_limit = decoded.get("state"), decoded.get("name"), decoded.get("limit")
        limit = 100 if raw_limit is None else _ascii_digits(raw_limit, 4)
        if (state is not None and state not in STATES) or limit is None or not 1 <= limit <= 1000:
            assert response.status_code == 422, (pairs, response.text)
            return
        assert response.status_code == 200, (pairs, response.text)
        tasks = response.json()["tasks"]
        assert len(tasks) <= limit
        assert all(t["state"] == state for t in tasks if state is not None), pairs
        assert all(t["name"] == name for t in tasks if name is not None), pairs
        served.unchanged()

    fuzz()
    served.still_streaming()


# -- GET and DELETE /tasks/<id>: ids over the whole of Unicode and raw bytes ---------------------


def _ids(served: Served) -> st.SearchStrategy[bytes]:
    """Task ids as bytes to percent-encode: real ones, Unicode (lone surrogates as ED A0 80),
    raw bytes, NUL, very long ones."""
    return st.one_of(
        st.sampled_from([i.encode() for i in served.states]),
        st.sampled_from([i.encode() for i in served.states]).map(lambda i: i + b"\x00"),
        TEXT.map(_wire),
        st.binary(min_size=1, max_size=12),
        st.sampled_from(
            [b"\xed\xa0\x80", b"\x00", b"x" * 129, b"x" * 5000, b".", b"..", b"%", b"a/b", b"?x", b"#"]
        ),
    )


def test_every_task_id_gets_a_clean_answer_and_changes_nothing(served: Served) -> None:
    finished = [i for i, state in served.states.items() if state != "running"]

    @MODEL
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        raw = data.draw(_ids(served))
        method = data.draw(st.sampled_from(["GET", "DELETE"]))
        task_id = unquote(_pct(raw))  # what the server decodes
        if method == "DELETE" and task_id == served.running:
            task_id, raw = finished[0], finished[0].encode()
        if task_id.endswith("/events"):
            return  # a stream (checked over a socket below)
        created = served.created()
        response = served.send(method, f"/tasks/{_pct(raw)}")
        if (task_id == "" or task_id.endswith("/")) and response.status_code == 307:
            # Starlette's redirect_slashes: /tasks/ and /tasks/<id>/ redirect without the slash.
            assert response.headers["location"].rstrip("/") == response.headers["location"]
            return
        check_answer(response, (method, raw))
        if task_id in served.states:
            if method == "GET":
                assert response.status_code == 200 and response.json()["id"] == task_id
            else:
                assert response.status_code == 409 and response.json()["error"]["code"] == "already_finished"
        else:
            assert response.status_code == 404, (method, raw, response.text[:200])
        assert served.created() == created
        served.unchanged()

    fuzz()
    for task_id, state in served.states.items():
        assert served.server.call(served.hub.get(task_id)).state.value == state
    served.still_streaming()


# -- the streams: /events and /tasks/<id>/events, every query parameter and Last-Event-ID ----

#: Last-Event-ID header values httpx can send: visible ASCII and obs-text (0x80-0xFF),
#: spaces and tabs inside. Control bytes and DEL go over a raw socket (test_fuzz_live).
HEADER_BYTES = st.lists(
    st.sampled_from([bytes([b]) for b in [*range(0x21, 0x7F), *range(0x80, 0x100)]])
    | st.sampled_from([b" ", b"\t"]),
    max_size=30,
).map(lambda parts: b"".join(parts).strip(b" \t"))


@dataclass
class StreamRequest:
    url: str
    headers: list[tuple[bytes, bytes]]
    task: str | None  # the per-task stream's decoded id; None for /events
    query: list[tuple[str, str]]  # as the server decodes it
    resume: str | None  # the Last-Event-ID the server sees (header first, then the query)


def test_every_field_of_a_stream_request_gets_a_clean_answer(served: Served) -> None:
    """``/events`` with ``task`` repeated, ``name``, ``last_event_id`` and ``token``; per-task
    streams of ids over Unicode; Last-Event-ID headers: a stream that starts as the contract
    says (a reset for an id that is not the server's, none for one it gave), a 204 or a
    JSON error; none hangs or creates a task, and each is released when the client goes."""
    real = [e[0] for e in served.watcher.events]  # every event id so far, in log order
    epoch = real[0].split("-")[0]
    finished = {i: real.index(last) for i, last in served.last_ids.items() if served.states[i] != "running"}
    resume_ids = st.one_of(
        st.sampled_from(real),
        st.builds(
            lambda d: f"{epoch}-{d}".encode(), st.from_regex(r"[0-9]{1,22}(-[0-9]{1,22})?", fullmatch=True)
        ),
        st.sampled_from(
            [b"", b"x", b"0", b"-", epoch.encode(), f"{epoch}-".encode(), f"{epoch}--1".encode()]
        ),
        HEADER_BYTES,
    ).map(lambda v: v if isinstance(v, bytes) else v.encode())
    task_ids = _ids(served)
    names = st.sampled_from([n.encode() for n in SIGNATURES]) | QUERY_TEXT

    @st.composite
    def stream_requests(draw: st.DrawFn) -> StreamRequest:
        pairs: list[tuple[bytes, bytes]] = []
        task = None
        if draw(st.booleans()):
            raw = draw(task_ids)
            task = unquote(_pct(raw))
            path = f"/tasks/{_pct(raw)}/events"
        else:
            path = "/events"
            ids = draw(st.lists(task_ids, max_size=3))
            if not draw(st.integers(0, 19)):  # over the limit of ids per stream
                ids = [draw(st.sampled_from([b"x", *(i.encode() for i in served.states)]))] * 1001
            pairs += [(b"task", i) for i in ids]
            pairs += [(b"name", n) for n in draw(st.lists(names, max_size=1))]
        pairs += [(b"last_event_id", v) for v in draw(st.lists(resume_ids, max_size=1))]
        pairs += [(b"token", v) for v in draw(st.lists(QUERY_TEXT, max_size=1))]
        pairs += [(k, v) for k, v in draw(st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=1))]
        pairs = draw(st.permutations(pairs))
        query = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in pairs)
        header = draw(st.none() | resume_ids)
        headers = [] if header is None else [(b"last-event-id", header)]
        decoded = parse_qsl(query, keep_blank_values=True)
        given = dict(decoded).get("last_event_id")
        resume = (header.decode("latin-1") if header else None) or given or None
        return StreamRequest(f"{path}?{query}", headers, task, decoded, resume)

    def expected(request: StreamRequest) -> set[int]:
        if request.task is not None:
            if "/" in request.task or request.task not in served.states:
                return {404}
            if request.task in finished and request.resume is not None:
                if request.resume in real:
                    return {204} if real.index(request.resume) >= finished[request.task] else {200}
                if request.resume.startswith(f"{epoch}-"):
                    return {200, 204}  # an id the server might have given
            return {200}
        ids = [v for k, v in request.query if k == "task"]
        name = dict(request.query).get("name")
        if len(ids) > 1000:
            return {422}
        if name is not None and name not in SIGNATURES:
            return {404}
        return {404} if any(i not in served.states for i in ids) else {200}

    @settings(MODEL, max_examples=40)
    @given(request=stream_requests())
    def fuzz(request: StreamRequest) -> None:
        created = served.created()
        with httpx.Client(base_url=served.server.url, timeout=5) as http:
            with http.stream("GET", request.url, headers=request.headers) as response:
                assert response.status_code in expected(request), (request, response.status_code)
                if response.status_code == 200:
                    check_stream(response, request)
                else:
                    response.read()
                    if response.status_code != 204:
                        check_answer(response, request)
        assert served.created() == created
        served.unchanged()

    def check_stream(response: httpx.Response, request: StreamRequest) -> None:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_raw()
        body = next(chunks)  # the opening comes at once, or ReadTimeout
        assert body.startswith(b"retry: "), request
        resync: bool | None = None  # must the stream start with a reset?
        if request.resume is not None:
            resync = None if request.resume.startswith(f"{epoch}-") else True
            if request.resume in real:
                resync = False
        if resync:
            while body.count(b"\n\n") < 2:
                body += next(chunks)
            assert body.split(b"\n\n")[1].startswith(b"event: reset\n"), request
        elif resync is False:
            assert b"event: reset" not in body, request
        if request.task in finished:  # a finished task's stream ends by itself, after its end
            body += b"".join(chunks)
            frames = [f for f in body.split(b"\n\n") if f.startswith(b"id: ")]
            assert frames and frames[-1].split(b"\n")[0] == f"id: {served.last_ids[request.task]}".encode()

    fuzz()
    served.still_streaming()


# -- credentials: a task is visible exactly to the requests that carry its token -----------------


def test_every_credential_a_client_sends_is_judged_by_its_token(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    """Tokens as ``Authorization: Bearer``, a cookie and ``?token=`` (repeated), valid,
    forged, expired, signed with another secret, past the 64 a request may carry: a
    task's snapshot and its place in the list are shown exactly with its valid token."""
    hub = make_hub(tokens=SECRET, shutdown_grace=0)
    app = hub.app
    server = live_server(hub, app)
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for body in (
            {"name": "sleep", "params": {"seconds": 0}},
            {"name": "fail"},
            {"name": "sleep", "params": {"seconds": 600}},
        ):
            created = http.post("/tasks", json=body).json()
            tokens[created["id"]] = created["token"]
    ids = list(tokens)
    stale = TaskTokens(SECRET, clock=lambda: 1000.0)  # its tokens expired long ago
    other = TaskTokens("another-secret-of-enough-length")
    # (token, the task id it grants or None); every token is cookie-safe text.
    candidates = st.one_of(
        st.sampled_from([(tokens[i], i) for i in ids]),
        st.sampled_from(ids).map(lambda i: (tokens[i][:-1] + ("A" if tokens[i][-1] != "A" else "B"), None)),
        st.sampled_from(ids).map(lambda i: (stale.issue(i), None)),
        st.sampled_from(ids).map(lambda i: (other.issue(i), None)),
        st.sampled_from(ids).map(lambda i: (tokens[i].replace(".", "..", 1), None)),
        st.sampled_from(ids).map(lambda i: (i, None)),
        st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True).map(lambda t: (t, None)),
    )

    @settings(MODEL, max_examples=60)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        headers: list[tuple[bytes, bytes]] = []
        found: list[str | None] = []  # what each token grants, in the order the hub reads them
        bearer = data.draw(st.none() | candidates)
        if bearer is not None:
            form = data.draw(
                st.sampled_from(["Bearer {}", "bearer {}", "BEARER   {}  ", "Basic {}", "Bearer\t{}"])
            )
            headers.append((b"authorization", form.format(bearer[0]).encode()))
            if form.split(" ")[0].lower() == "bearer":
                found.append(bearer[1])
        cookie = data.draw(st.none() | candidates)
        if cookie is not None:
            form = data.draw(
                st.sampled_from(["sse_tasks_token={}", "a=b; sse_tasks_token={}; c=d", "sse_tasks_tokens={}"])
            )
            headers.append((b"cookie", form.format(cookie[0]).encode()))
            if "sse_tasks_token=" in form:
                found.append(cookie[1])
        query = data.draw(st.lists(candidates, max_size=3))
        if not data.draw(st.integers(0, 9)):  # past the tokens a request may carry
            query = [("x", None)] * (64 - len(found)) + query
        found += [grant for _, grant in query]
        granted = {grant for grant in found[:64] if grant is not None}
        params = "&".join(f"token={_pct(t.encode())}" for t, _ in query)
        for task_id in ids:
            response = send_in_process(server, app, "GET", f"/tasks/{task_id}?{params}", headers)
            check_answer(response, (task_id, headers, query))
            assert response.status_code == (200 if task_id in granted else 404), (task_id, headers, query)
        listed = send_in_process(server, app, "GET", f"/tasks?{params}", headers)
        assert listed.status_code == 200
        assert {t["id"] for t in listed.json()["tasks"]} == granted, (headers, query)

    fuzz()


# -- what the fuzzing found --------------------------------------------------------------------


@pytest.mark.parametrize(
    "broker_url",
    ["memory", "redis"],
    indirect=True,
)
def test_a_resume_id_the_broker_cannot_hold_resyncs(
    make_hub: HubFactory, live_server: Callable[..., LiveServer]
) -> None:
    """Last-Event-ID values shaped like the broker's ids, with parts beyond 64 bits, once
    the history has trimmed: a stream with a reset (or 204), never a 500."""
    hub = make_hub(history=8)
    server = live_server(hub)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        ids = [
            http.post("/tasks", json={"name": "sleep", "params": {"seconds": 0}}).json()["id"]
            for _ in range(6)
        ]
        deadline = time.monotonic() + 10  # 18 events through a ring of 8: it has trimmed
        while sum(hub.stats.events_published.values()) < 18 and time.monotonic() < deadline:
            time.sleep(0.01)
        epoch = http.get("/tasks").json()["cursor"].split("-")[0]

        @settings(FUZZ, max_examples=25)
        @given(tail=st.from_regex(r"[0-9]{1,25}-[0-9]{1,25}", fullmatch=True))
        @example(tail=f"0-{2**64}")
        def fuzz(tail: str) -> None:
            for url in ("/events", f"/tasks/{ids[0]}/events"):
                with http.stream("GET", url, headers={"last-event-id": f"{epoch}-{tail}"}) as response:
                    assert response.status_code in (200, 204), (tail, response.status_code)
                    if response.status_code == 200:
                        assert next(response.iter_raw()).startswith(b"retry: ")

        fuzz()


@pytest.mark.anyio
@pytest.mark.parametrize("decoder", JSON_BACKENDS)
async def test_an_integer_past_64_bits_is_an_integer_to_both_json_decoders(
    decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_json(decoder, monkeypatch)
    hub = TaskHub("memory://", shutdown_grace=0)
    register_demo_tasks(hub)
    async with in_process(hub) as client:
        body = b'{"name": "count", "params": {"n": 18446744073709551616, "interval": 60}}'
        response = await client.post("/tasks", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 202, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("decoder", JSON_BACKENDS)
async def test_an_integer_beyond_a_double_is_refused_like_1e400(
    decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_json(decoder, monkeypatch)
    hub = TaskHub("memory://", shutdown_grace=0)
    register_demo_tasks(hub)
    async with in_process(hub) as client:
        body = b'{"name": "sleep", "params": {"seconds": 1' + b"0" * 400 + b"}}"
        response = await client.post("/tasks", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_request"
