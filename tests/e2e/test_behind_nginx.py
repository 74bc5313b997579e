"""``sse-tasks serve`` behind a real nginx that serves it under ``/jobs/``, with the
``server`` block of docs/production.md: the prefix told by ``--root-path``, or by nginx
in ``X-Forwarded-Prefix``. The API, the streams, the demo page and the browser module,
all through the proxy. Skipped when nginx is not installed (scripts/test installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ROOT, SSEEvent, free_port, task_events

from sse_tasks.demo import generated_text

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light; scripts/test does)"
)

PREFIX = "/jobs"
WAIT = 30.0


def documented_server_block() -> str:
    """The ``server { … }`` block of docs/production.md (the first nginx fence)."""
    text = (ROOT / "docs" / "production.md").read_text()
    found = re.search(r"```nginx\n(server \{.*?\n\})\n```", text, re.DOTALL)
    assert found, "docs/production.md has no nginx server block"
    return found.group(1)


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"the documented nginx block no longer has {old!r}"
    return text.replace(old, new)


def nginx_config(tmp: Path, port: int, upstream: int, forwarded_prefix: bool) -> str:
    """The documented block, listening on a loopback port without TLS, in front of ``upstream``."""
    server = documented_server_block()
    server = replaced(server, "listen 443 ssl;", f"listen 127.0.0.1:{port};")
    server = re.sub(r"\n\s*http2 on;[^\n]*", "", server)  # HTTP/2 needs TLS (and nginx >= 1.25.1)
    server = replaced(server, "http://127.0.0.1:8000/", f"http://127.0.0.1:{upstream}/")
    if forwarded_prefix:
        server = replaced(
            server, "# proxy_set_header X-Forwarded-Prefix", "proxy_set_header X-Forwarded-Prefix"
        )
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
pid {tmp / "nginx.pid"};
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
{server}
}}
"""


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a process that is starting, bounded by the deadline
    raise RuntimeError(f"{what} did not listen on {port} within {WAIT} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Proxied:
    origin: str  # nginx, e.g. http://127.0.0.1:PORT
    upstream: str  # sse-tasks serve itself
    mode: str

    @property
    def hub(self) -> str:
        return self.origin + PREFIX


@pytest.fixture(scope="module", params=["root-path", "forwarded-prefix"])
def proxied(request: pytest.FixtureRequest) -> Iterator[Proxied]:
    """``sse-tasks serve`` (demo mode) and nginx in front of it, for the module."""
    assert NGINX is not None
    mode: str = request.param
    upstream, port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="sse-tasks-nginx-"))
    args = ["--root-path", PREFIX] if mode == "root-path" else []
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SSE_TASKS_") and k != "FORWARDED_ALLOW_IPS"
    }
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sse_tasks",
            "serve",
            "--port",
            str(upstream),
            "--log-level",
            "warning",
            *args,
        ],
        env={**env, "SSE_TASKS_HEARTBEAT": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(upstream, serve, "sse-tasks serve")
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(tmp, port, upstream, forwarded_prefix=mode == "forwarded-prefix"))
        error_log = tmp / "error.log"
        nginx = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(tmp),
                "-c",
                str(conf),
                "-e",
                str(error_log),
                "-g",
                "daemon off; master_process off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, nginx, "nginx")
        except RuntimeError as exc:
            log = error_log.read_text() if error_log.exists() else ""
            raise RuntimeError(f"{exc}: {log}") from None
        yield Proxied(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{upstream}", mode)
    finally:
        if nginx is not None:
            stop(nginx)
        stop(serve)
        shutil.rmtree(tmp, ignore_errors=True)


def read_stream(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None, until: Any = None
) -> tuple[httpx.Response, list[SSEEvent]]:
    """The events of ``url`` until the server ends the stream or ``until(event)`` holds.

    Synchronous: Playwright's sync API holds this thread's event loop for the module.
    """
    events: list[SSEEvent] = []
    with client.stream("GET", url, headers=headers) as response:
        current, data = SSEEvent(), []
        for line in response.iter_lines():
            if line == "":
                if current.event is not None:
                    current.data = "\n".join(data)
                    events.append(current)
                    if until is not None and until(current):
                        break
                current, data = SSEEvent(), []
            elif line.startswith("event: "):
                current.event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
    return response, events


def links(task_id: str) -> dict[str, str]:
    base = f"{PREFIX}/tasks/{task_id}"
    return {"self": base, "events": f"{base}/events", "output": f"{base}/output"}


def test_the_api_and_its_streams_through_the_proxy(proxied: Proxied) -> None:
    with httpx.Client(timeout=WAIT) as client:
        cursor = (client.get(proxied.hub + "/tasks")).json()["cursor"]
        words = 12
        created = client.post(
            proxied.hub + "/tasks", json={"name": "generate", "params": {"words": words, "delay": 0.01}}
        )
        assert created.status_code == 202
        task = created.json()
        assert task["links"] == links(task["id"])
        assert created.headers["location"] == links(task["id"])["self"]

        # links.events, followed through the proxy to the terminal event (nginx does not buffer it).
        response, events = read_stream(client, proxied.origin + task["links"]["events"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        snapshots = task_events(events)
        assert snapshots[-1].event == "task.succeeded"
        assert all(s.json()["links"] == links(task["id"]) for s in snapshots)
        output = [
            e.json()["text"] for e in events if e.event == "task.output" and e.json()["kind"] == "output"
        ]
        assert "".join(output) == generated_text(words)

        # The stream of every task, resumed from before the task: the shared frames carry the prefix.
        def ended(event: Any) -> bool:
            return bool(event.event == "task.succeeded" and event.json()["id"] == task["id"])

        _, everything = read_stream(
            client, proxied.hub + "/events", headers={"Last-Event-ID": cursor}, until=ended
        )
        mine = [e.json() for e in task_events(everything) if e.json()["id"] == task["id"]]
        assert mine and all(s["links"] == links(task["id"]) for s in mine)

        got = client.get(proxied.origin + task["links"]["self"])
        assert got.json()["state"] == "succeeded" and got.json()["links"] == links(task["id"])
        assert (client.get(proxied.origin + task["links"]["output"])).text == generated_text(words)
        listed = (client.get(proxied.hub + "/tasks")).json()["tasks"]
        assert {t["id"]: t["links"] for t in listed}[task["id"]] == links(task["id"])

        openapi = client.get(proxied.hub + "/openapi.json")
        assert openapi.json()["servers"] == [{"url": PREFIX}]
        module = client.get(proxied.hub + "/sse-tasks.js")
        assert module.status_code == 200 and "export function followTask(" in module.text
        assert module.headers["content-type"] == "text/javascript; charset=utf-8"
        page = client.get(proxied.hub + "/")
        assert page.status_code == 200 and 'src="static/app.js"' in page.text
        bare = client.get(proxied.hub)  # nginx sends /jobs to /jobs/
        assert bare.status_code == 301 and bare.headers["location"].endswith(PREFIX + "/")


def test_the_prefix_is_the_proxys_to_give(proxied: Proxied) -> None:
    """Straight to the server, a client's own X-Forwarded-Prefix counts only from a trusted
    address (127.0.0.1 by default, as the test client is), and only when it is valid."""
    with httpx.Client(timeout=WAIT) as client:
        own = "" if proxied.mode == "forwarded-prefix" else PREFIX  # --root-path, or nothing
        for header, root in (("/elsewhere", "/elsewhere"), ("//evil.example", own), ("/a/../b", own)):
            created = client.post(
                proxied.upstream + "/tasks", json={"name": "sleep"}, headers={"X-Forwarded-Prefix": header}
            )
            assert created.json()["links"]["self"] == f"{root}/tasks/{created.json()['id']}"


def test_the_demo_page_through_the_proxy(proxied: Proxied, page: Any) -> None:
    from _browser import expect

    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(proxied.hub + "/")
    expect(page.locator("#connection")).to_have_text("Live", timeout=WAIT * 1000)
    page.get_by_label("Steps", exact=True).fill("4")
    page.get_by_label("Seconds between steps", exact=True).fill("0.05")
    page.get_by_role("button", name="Start count").click()
    row = page.locator("li.task").first
    expect(row.locator(".task-state")).to_have_text("succeeded", timeout=WAIT * 1000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".task-outcome")).to_have_text('Result: {"count":4}')
    # Everything the page loaded and called went through the prefix: the module, the POST, the stream.
    assert requests and all(url.startswith(proxied.hub + "/") for url in requests), requests
    assert proxied.hub + "/sse-tasks.js" in requests
    assert any(url.startswith(proxied.hub + "/events") for url in requests)


def test_the_browser_module_follows_a_task_through_the_proxy(proxied: Proxied, page: Any) -> None:
    page.goto(proxied.hub + "/")  # the hub's origin; the module is imported below
    outcome = page.evaluate(
        """async ([hub, timeoutMs]) => {
          const mod = await import(hub + "/sse-tasks.js");
          const response = await fetch(hub + "/tasks", {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({name: "generate", params: {words: 15, delay: 0.01}}),
          });
          const task = await response.json();
          return await new Promise((resolve, reject) => {
            const updates = [];
            let text = "";
            setTimeout(() => reject(new Error("the task did not end in time")), timeoutMs);
            mod.followTask(task.links.events, {
              onUpdate: (t) => updates.push([t.state, t.links.events]),
              onOutput: (c) => { if (c.kind === "output") text += c.text; },
              onDone: (t) => resolve({hubUrl: mod.hubUrl, id: task.id, events: task.links.events,
                                      state: t.state, updates, text}),
              onError: (e) => { if (e.fatal) reject(new Error(e.message)); },
            });
          });
        }""",
        [proxied.hub, WAIT * 1000],
    )
    assert outcome["hubUrl"] == proxied.hub + "/"
    assert outcome["events"] == links(outcome["id"])["events"]
    assert outcome["state"] == "succeeded"
    assert outcome["text"] == generated_text(15)
    assert {events for _, events in outcome["updates"]} == {links(outcome["id"])["events"]}
    assert outcome["updates"][-1][0] == "succeeded"
