"""HTML streams over HTTP: htmx's event names, Datastar's events, escaping, exact output."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from _support import HubFactory, ServerFactory, SSEEvent, collect

from sse_tasks import TaskCard, TaskContext, TaskHub
from sse_tasks.demo import generated_text
from sse_tasks.web.datastar import id_selector
from sse_tasks.web.html import sse_frame
from sse_tasks.web.render import escape

pytestmark = pytest.mark.anyio

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">\'"&amp;\u2028\u2029end\rx\x85'
#: What a browser reads back: U+0085 has no character reference of its own (``&#x85;`` is "…").
SHOWN = HOSTILE.replace("\x85", "\u2026")
OOB = r'<div id="task-[\w-]+-output" hx-swap-oob="innerHTML">(.*)</div>'
CHUNK = re.compile(r'<(span|div) id="task-[\w-]+-out-(\d+)" class="([^"]*)">(.*?)</\1>', re.S)


@dataclass
class Page:
    """What a page holds after applying a stream's events the way htmx or Datastar does."""

    card: str = ""
    chunks: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, class, text)
    signals: dict[str, Any] = field(default_factory=dict)
    replaced: int = 0
    appended: int = 0
    replacing: bool = False
    done: bool = False

    def parse(self, fragment: str) -> list[tuple[int, str, str]]:
        return [(int(m[2]), m[3], html.unescape(m[4])) for m in CHUNK.finditer(fragment)]

    def htmx(self, event: SSEEvent) -> None:
        if event.event == "state":
            self.card = event.data
        elif event.event == "output":
            oob = re.fullmatch(OOB, event.data, re.S)
            if oob:
                self.chunks = self.parse(oob[1])
                self.replaced += 1
            else:
                self.chunks += self.parse(event.data)
                self.appended += 1
        elif event.event == "done":
            self.done = True

    def datastar(self, event: SSEEvent) -> None:
        fields: dict[str, list[str]] = {}
        for line in event.data.split("\n"):
            key, _, value = line.partition(" ")
            fields.setdefault(key, []).append(value)
        if event.event == "datastar-merge-signals":
            import json

            self.signals.update(json.loads("\n".join(fields["signals"])))
            return
        if event.event == "datastar-remove-fragments":
            # beta.11's `inner` keeps only the last element: a replace empties, then appends
            assert fields["selector"][0].endswith("-output > *"), event
            self.chunks = []
            self.replaced += 1
            self.replacing = True
            return
        assert event.event == "datastar-merge-fragments", event
        fragments = "\n".join(fields.get("fragments", []))
        selector, mode = fields["selector"][0], fields["mergeMode"][0]
        if selector.endswith("-card"):
            assert mode == "inner"
            self.card = fragments
        else:
            assert (selector.endswith("-output"), mode) == (True, "append")
            self.chunks += self.parse(fragments)
            self.appended += 0 if self.replacing else 1
            self.replacing = False

    def apply(self, kind: str, events: list[SSEEvent]) -> None:
        for event in events:
            if event.event:
                getattr(self, kind)(event)

    def words(self) -> str:
        return "".join(text for _, cls, text in self.chunks if cls == "sse-task-out")

    def exact(self, total: int) -> bool:
        return [seq for seq, _, _ in self.chunks] == list(range(total))


async def submit(http: httpx.AsyncClient, name: str, **params: Any) -> dict[str, Any]:
    response = await http.post("/tasks", json={"name": name, "params": params})
    assert response.status_code == 202, response.text
    return dict(response.json())


def hostile_hub(make_hub: HubFactory, **options: Any) -> TaskHub:
    hub = make_hub(**options)

    async def hostile(ctx: TaskContext) -> None:
        ctx.progress(0.5, HOSTILE)
        ctx.output(HOSTILE)
        ctx.log(HOSTILE, level="warning")
        raise ValueError(HOSTILE)

    hub.register(hostile)
    return hub


@pytest.fixture
async def http(make_hub: HubFactory, live_server: ServerFactory) -> Any:
    server = live_server(hostile_hub(make_hub))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("kind", ["htmx", "datastar"])
async def test_a_fresh_stream_has_the_whole_state_then_each_chunk_once(
    http: httpx.AsyncClient, kind: str
) -> None:
    task = await submit(http, "generate", words=25, delay=0)
    response, events = await collect(http, f"/tasks/{task['id']}/{kind}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    page = Page()
    page.apply(kind, events)
    assert page.exact(27)  # 25 words and 2 log lines, numbered together
    assert page.words() == generated_text(25)
    assert page.replaced == 1  # the replay of a fresh stream: one replace, never appended
    assert 'data-state="succeeded"' in page.card and "sse-task-progress" in page.card
    if kind == "htmx":
        assert {e.event for e in events} <= {None, "state", "output", "done"}
        assert [e.event for e in events[-2:]] == ["state", "done"]
        assert events[-1].id is None  # the last id stays the terminal event's
    else:
        kinds = {None, "datastar-merge-fragments", "datastar-merge-signals", "datastar-remove-fragments"}
        assert {e.event for e in events} <= kinds
        assert page.signals["task"] == {
            "id": task["id"],
            "state": "succeeded",
            "progress": 1.0,
            "message": None,
            "terminal": True,
        }


@pytest.mark.parametrize("kind", ["htmx", "datastar"])
@pytest.mark.parametrize("resume", ["header", "query", "none", "unknown"])
async def test_output_is_exact_across_a_reconnect(http: httpx.AsyncClient, kind: str, resume: str) -> None:
    task = await submit(http, "generate", words=40, delay=0.01)
    url = f"/tasks/{task['id']}/{kind}"
    page = Page()
    _, first = await collect(http, url, until=lambda e: page.apply(kind, [e]) or len(page.chunks) >= 8)
    assert not page.done and len(page.chunks) >= 8
    last_id = [e.id for e in first if e.id][-1]
    headers = {"Last-Event-ID": last_id} if resume == "header" else None
    if resume == "unknown":  # answered with a reset, then the whole output again
        headers = {"Last-Event-ID": "no-such-event"}
    query = f"?last_event_id={last_id}" if resume == "query" else ""
    replaced = page.replaced
    _, rest = await collect(http, url + query, headers=headers)
    page.apply(kind, rest)
    assert page.exact(44)  # 40 words, 4 log lines
    assert page.words() == generated_text(40)
    # With an id the missed chunks are appended; without one the replay replaces.
    assert page.replaced == replaced + (1 if resume in ("none", "unknown") else 0)


@pytest.mark.parametrize("kind", ["htmx", "datastar"])
async def test_resuming_at_the_end_gets_the_card_and_the_end_without_output(
    http: httpx.AsyncClient, kind: str
) -> None:
    task = await submit(http, "generate", words=5, delay=0)
    _, events = await collect(http, f"/tasks/{task['id']}/{kind}")
    last_id = [e.id for e in events if e.id][-1]
    response, again = await collect(http, f"/tasks/{task['id']}/{kind}", headers={"Last-Event-ID": last_id})
    assert response.status_code == 200
    page = Page()
    page.apply(kind, again)
    assert page.chunks == [] and page.appended == page.replaced == 0
    assert 'data-state="succeeded"' in page.card
    assert page.done is (kind == "htmx")


@pytest.mark.parametrize("kind", ["htmx", "datastar"])
async def test_every_task_controlled_string_is_escaped(http: httpx.AsyncClient, kind: str) -> None:
    task = await submit(http, "hostile")
    _, events = await collect(http, f"/tasks/{task['id']}/{kind}")
    # Signals are JSON values (a page shows them with data-text): only markup is escaped.
    raw = "\n".join(e.data for e in events if e.event != "datastar-merge-signals")
    assert "<script" not in raw and "<img" not in raw and "\u2028" not in raw and "\r" not in raw
    assert 'onerror="' not in raw
    page = Page()
    page.apply(kind, events)
    assert [(cls, text) for _, cls, text in page.chunks] == [
        ("sse-task-out", SHOWN),
        ("sse-task-log sse-task-log-warning", SHOWN),
    ]
    assert 'data-state="failed"' in page.card
    if kind == "datastar":
        assert page.signals["task"]["message"] == HOSTILE
    message = re.search(r'<span class="sse-task-error">(.*?)</span>', page.card, re.S)
    assert message is not None and html.unescape(message[1]) == f"ValueError: {SHOWN}"


@pytest.mark.parametrize(
    ("element_id", "selector"),
    [  # what a browser's CSS.escape gives (CSSOM, "serialize an identifier")
        ("task-3f9a-card", "#task-3f9a-card"),
        ("task-report:42.v1-card", "#task-report\\:42\\.v1-card"),
        ("task-a b/c#d-output", "#task-a\\ b\\/c\\#d-output"),
        ("1x", "#\\31 x"),
        ("-1x", "#-\\31 x"),
        ("-", "#\\-"),
        ("a\x00b\x7f\n", "#a\ufffdb\\7f \\a "),
        ("é\u2028", "#é\u2028"),
    ],
)
def test_datastar_selectors_are_css_escaped(element_id: str, selector: str) -> None:
    assert id_selector(element_id) == selector


def test_a_task_id_cannot_add_a_line_to_a_datastar_event() -> None:
    """Engines take no id with a control character (``valid_task_id``), and the
    selector escapes one all the same: ``:`` and ``.`` select, a line break starts nothing."""
    from datastar_py import ServerSentEventGenerator

    from sse_tasks._core.models import OutputChunk, Task
    from sse_tasks.web.datastar import DatastarDialect

    hostile = "x\n\nevent: datastar-merge-fragments\ndata: selector body\ndata: fragments <img>"
    dialect = DatastarDialect(ServerSentEventGenerator, TaskCard(), "task")
    for task_id in (hostile, "report:42.v1"):
        task = Task(id=task_id, name="n")
        chunk = OutputChunk(task_id, 0, "output", "hi")
        for raw in (
            dialect.state(task, "1"),
            dialect.append(chunk, "2"),
            dialect.replace(task_id, [chunk], "3"),
        ):
            lines = raw.decode().splitlines()
            assert [line for line in lines if line.startswith("event:")] == [
                line for line in lines if line.startswith("event: datastar-")
            ]
            selectors = [line for line in lines if line.startswith("data: selector ")]
            assert selectors and all(line.count("#") == 1 for line in selectors), lines
            assert not any(line.startswith("data: fragments <img") for line in lines)
    assert (
        "data: selector #task-report\\:42\\.v1-card"
        in dialect.state(Task(id="report:42.v1", name="n"), "1").decode()
    )


def test_escape_leaves_no_markup_no_line_break_and_no_surrogate() -> None:
    text = "<a href='x' title=\"y\">&\r\n\u2028\u2029\x0b\x0c\x1c\x1d\x1e\x85\ud800z"
    escaped = escape(text)
    assert not set("<>'\"\r\u2028\u2029\x0b\x0c\x1c\x1d\x1e\x85") & set(escaped)
    assert escaped.splitlines() == escaped.split("\n")  # datastar-py splits lines so
    escaped.encode()  # no lone surrogate left
    assert html.unescape(escaped).endswith("\ufffdz")
    # A renderer's own line breaks, CR included, stay inside the frame's data.
    frame = sse_frame("output", "a\rb\r\nc\nd", "7")
    assert frame == b"id: 7\nevent: output\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


async def test_a_bad_signal_name_is_refused(http: httpx.AsyncClient) -> None:
    task = await submit(http, "sleep", seconds=0)
    response = await http.get(f"/tasks/{task['id']}/datastar?signal=a.b")
    assert response.status_code == 422
    response, events = await collect(http, f"/tasks/{task['id']}/datastar?signal=job_1")
    page = Page()
    page.apply("datastar", events)
    assert page.signals["job_1"]["state"] == "succeeded"


async def test_unknown_tasks_and_files_are_404(http: httpx.AsyncClient) -> None:
    for path in ("/tasks/nope/htmx", "/tasks/nope/datastar", "/vendor/nope.js", "/vendor/..%2Fhtml.py"):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    for name in ("htmx.min.js", "htmx-ext-sse.min.js", "datastar.js"):
        response = await http.get(f"/vendor/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"


async def test_without_datastar_py_the_datastar_stream_answers_501(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await submit(http, "sleep", seconds=0)
    monkeypatch.setitem(sys.modules, "datastar_py", None)  # what an absent package imports as
    response = await http.get(f"/tasks/{task['id']}/datastar")
    assert response.status_code == 501
    assert "pip install 'sse-tasks[datastar]'" in response.json()["error"]["message"]
    response, events = await collect(http, f"/tasks/{task['id']}/htmx")
    assert response.status_code == 200 and events[-1].event == "done"


def test_importing_sse_tasks_does_not_import_datastar_py() -> None:
    code = "import sys, sse_tasks; sse_tasks.TaskHub().app; print('datastar_py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


async def test_an_embedders_renderer_draws_the_fragments(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    class Plain:
        def state(self, task: Any) -> str:
            return f"<p>{escape(task.name)} is {escape(task.state.value)}</p>"

        def output(self, chunk: Any) -> str:
            return f"<i>{escape(chunk.text)}</i>"

    hub = make_hub()
    hub.configure(html_renderer=Plain())
    server = live_server(hub)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        task = await submit(client, "generate", words=2, delay=0)
        _, events = await collect(client, f"/tasks/{task['id']}/htmx")
    states = [e.data for e in events if e.event == "state"]
    assert states[-1] == "<p>generate is succeeded</p>"
    outputs = [e.data for e in events if e.event == "output"]
    assert "<i>" in "".join(outputs)


async def test_the_demo_pages_follow_their_tasks_with_tokens_and_stay_out_of_an_authorized_hub(
    make_hub: HubFactory, live_server: ServerFactory
) -> None:
    from _support import with_routes

    from sse_tasks.demo.html_pages import html_page_routes

    assert html_page_routes(make_hub(authorize=lambda access: True)) == []
    hub = make_hub(tokens="s" * 32)
    server = live_server(hub, with_routes(hub, html_page_routes(hub)))
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = await client.post("/htmx/start", content="name=generate&words=3&delay=0", headers=form)
        connect = re.search(r'sse-connect="([^"]+)"', answer.text)
        assert connect is not None
        url = html.unescape(connect[1])
        assert "?token=" in url
        _, events = await collect(client, url)
        assert events[-1].event == "done"
        task_id = url.split("/")[2]
        assert (await client.get(f"/tasks/{task_id}/htmx")).status_code == 404  # no token, no task
        page = await client.get(f"/htmx?task={task_id}")
        assert "sse-connect" not in page.text and "off with task tokens" in page.text
        refused = await client.post("/htmx/start", content="name=fail", headers=form)
        assert refused.status_code == 200 and 'role="alert"' in refused.text
        assert "sse-connect" not in refused.text
        answer = await client.post("/datastar/start", content="name=count&n=1&interval=0", headers=form)
        assert answer.text.startswith("event: datastar-merge-fragments\n")
        assert "data: selector #tasks\n" in answer.text and "data-on-load=" in answer.text
        # Datastar 1.0.0-beta.11 posts a form as FormData: multipart/form-data
        fields = {"name": (None, "generate"), "words": (None, "2"), "delay": (None, "0")}
        answer = await client.post("/datastar/start", files=fields)
        assert "data-on-load=" in answer.text and 'role="alert"' not in answer.text
        refused = await client.post("/datastar/start", files={"name": (None, "nope")})
        assert "choose count or generate" in refused.text and "data-on-load=" not in refused.text


@pytest.mark.parametrize(
    "root", ["/x');alert(document.domain);('", '/a"><img src=x onerror=alert(1)>', "/o'reilly&co"]
)
async def test_the_demo_pages_write_any_root_path_as_text(make_hub: HubFactory, root: str) -> None:
    """A root path (``--root-path``, or a trusted proxy's ``X-Forwarded-Prefix``) may hold
    quotes and markup: the pages' attributes and Datastar's expression carry it as text."""
    from html.parser import HTMLParser

    from _support import with_routes

    from sse_tasks.demo.html_pages import html_page_routes

    class Attributes(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, str | None]] = []
            self.tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self.found.extend(attrs)

    hub = make_hub()
    app = with_routes(hub, html_page_routes(hub))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path=root), base_url="http://t"
    ) as client:
        for page, scripts in (
            ("htmx", ["htmx.min.js", "htmx-ext-sse.min.js"]),
            ("datastar", ["datastar.js"]),
        ):
            parsed = Attributes()
            parsed.feed((await client.get(f"/{page}")).text)
            assert "img" not in parsed.tags
            assert [value for name, value in parsed.found if name == "src"] == [
                f"{root}/vendor/{s}" for s in scripts
            ]
            starts = {value for name, value in parsed.found if name in ("hx-post", "data-on-submit")}
            if page == "htmx":
                assert starts == {f"{root}/htmx/start"}
            else:
                assert starts == {f"@post({json.dumps(f'{root}/datastar/start')}, {{contentType: 'form'}})"}
