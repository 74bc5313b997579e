"""Every shell and Python snippet of README.md and docs/*.md, collected and run as written.

**Which blocks.** Fenced blocks tagged ``sh``, ``bash``, ``shell``, ``console``,
``python`` or ``py`` in README.md and docs/*.md (CHANGELOG.md is history, not
instructions). A block may be preceded, on the lines right before its opening fence,
by markers:

- ``<!-- skip-test: reason -->``: not run, with that reason (required);
- ``<!-- test: continues -->`` (python): runs after the document's earlier python
  blocks, back to the nearest one that does not continue (a fragment of one program);
- ``<!-- test: file app.py -->`` (python): the block is the file ``app.py``; its test
  imports it, and every later shell block of the document finds it in its working
  directory (as the reader who saved it would);
- ``<!-- test: signature of sse_tasks.TaskHub -->`` (python): the block is that
  callable's signature; names, kinds and defaults must be ``inspect.signature``'s.

**How they run.** In a fresh temporary working copy (``examples/``,
``pyproject.toml``, ``README.md``, and ``.venv``: a link to the running interpreter's
environment, which the README's first command would have made), with this
environment's ``bin`` first on ``PATH`` and no ``SSE_TASKS_*``/``CELERY_*`` variables
of the caller.

- python: in a fresh interpreter, with a timeout; it must exit 0, and ``-W error``
  makes a warning the snippet causes (a deprecation, say) fail it.
- sh, bash, shell: each command (a line and its ``\\`` continuations; comment lines
  skipped) in its own ``bash -euo pipefail -c``, so shell variables and ``cd`` do not
  carry to the next command (files do). ``curl`` fails on an HTTP error status (a
  wrapper adds ``--fail-with-body`` unless the command asks for ``--fail``), so a
  documented request that the server refuses fails its test.
- console: each ``$ `` command in plain ``bash -c``, as typed at a prompt (no ``-e``,
  no ``pipefail``). A non-zero status fails unless the next command shows it
  (``echo $?``, whose output is compared exactly). The lines after a command are the
  shape of its output (stdout; else stdout then stderr), matched in order as a
  subsequence of the real lines: ``…`` and a word ending in ``…`` (``Hk3…``) match
  anything, every number matches any number, an SSE ``id:`` line matches any id, and a
  line drawn for a terminal (box drawing or spinner characters) is not compared, since
  the output is piped.
- Long-running commands (``sse-tasks serve``, ``uvicorn``, ``celery … worker``,
  ``redis-server``) start in the background, in a process group of their own, and are
  awaited until their port answers (a worker: until its first line of output); after
  the block they must still be running, and are stopped (SIGTERM, then SIGKILL after 2 s).

**Rewrites, and only these.**

- Ports: a server the block starts gets a free port for the one written (added as
  ``--port`` where the command relies on the default; ``redis-server`` also gets
  ``--bind 127.0.0.1``), and ``localhost:N`` / ``127.0.0.1:N`` in the block follow. A
  port the block uses but does not serve is served by the servers of the nearest
  earlier block of the same document that starts one on it (started again for this
  test, as the reader left them running); failing that, 8000 is a real
  ``sse-tasks serve`` (demo, ``memory://``) that the test module starts, and 6379 the
  suite's redis-server (the test is skipped without one). Any other port stays as
  written (an origin such as ``http://localhost:5173``).
- A block that mentions Celery runs with ``SSE_TASKS_BROKER`` at database 8 of the
  suite's redis-server (``examples/celery_app.py`` puts Celery's broker on 9); both
  are flushed before and after.
- Install commands: ``python3 -m venv …`` and ``pip install …`` become the no-op
  ``: …``, but only when what they would install is already importable here (the
  ``sse-tasks`` distribution, and every requirement of the extras named); otherwise
  the test is skipped, never installing anything.
- Placeholders: ``<id>`` and an elided id such as ``Hk3…`` in a command become the id
  of the task the block's earlier commands answered with; when none did, the
  submitting commands (``POST``, ``sse-tasks submit``) of the nearest earlier block of
  the document are run first for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support import free_port

LANGS = {
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "console": "console",
    "python": "python",
    "py": "python",
}
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
MARKER = re.compile(r"^<!--\s*(?P<kind>skip-test|test)\s*:(?P<value>.*?)-->\s*$")
TEST_MARKER = re.compile(r"continues|file [\w.-]+\.py|signature of [\w.]+")

COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 45.0
STOP_GRACE = 2.0  # a server still running a task would wait its shutdown grace
STOP_TIMEOUT = 15.0
DEMO_PORT, REDIS_PORT = 8000, 6379
CELERY_DB = 8  # the hub's database for Celery blocks; examples/celery_app.py puts Celery on the next

BIN = Path(sys.executable).parent


# -- the blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    kind: str  # "python", "shell" or "console"
    text: str
    skip: str | None = None
    markers: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def marker(self, name: str) -> str | None:
        """What follows ``name`` in this block's ``test:`` marker (``""`` if nothing), or None."""
        for marker in self.markers:
            if marker == name or marker.startswith(name + " "):
                return marker[len(name) :].strip()
        return None


def parse(path: str, text: str) -> list[Block]:
    """The runnable blocks of one Markdown document; a malformed marker raises ValueError."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str, str]] = []  # markers seen right before the next line
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line.strip())
        if marker:
            pending.append((i + 1, marker["kind"], marker["value"].strip()))
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if pending:
                raise ValueError(f"{path}:{pending[0][0]}: a test marker must be right before a fence")
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence["fence"]):
            end += 1
        kind = LANGS.get(fence["info"].lower())
        if kind is None:
            if pending:
                raise ValueError(f"{path}:{pending[0][0]}: a test marker on a block that is not run")
        else:
            blocks.append(_block(path, i + 1, kind, "\n".join(lines[i + 1 : end]) + "\n", pending))
        pending = []
        i = end + 1
    return blocks


def _block(path: str, line: int, kind: str, text: str, markers: list[tuple[int, str, str]]) -> Block:
    skip = None
    tests: list[str] = []
    for at, name, value in markers:
        where = f"{path}:{at}"
        if name == "skip-test":
            if not value:
                raise ValueError(f"{where}: skip-test needs a reason: <!-- skip-test: why -->")
            skip = value
        elif kind != "python" or not TEST_MARKER.fullmatch(value):
            raise ValueError(f"{where}: unknown test marker {value!r} on a {kind} block")
        else:
            tests.append(value)
    return Block(path, line, kind, text, skip, tuple(tests))


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md (CHANGELOG.md is exempt)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def collect(root: Path) -> list[Block]:
    """Every runnable block of every document, in document order."""
    return [
        block
        for doc in documents(root)
        for block in parse(doc.relative_to(root).as_posix(), doc.read_text(encoding="utf-8"))
    ]


# -- commands -----------------------------------------------------------------------------


@dataclass
class Command:
    """A shell command of a block, and (console) the output the document shows for it."""

    line: int
    text: str
    output: list[str] = field(default_factory=list)


def commands(block: Block) -> list[Command]:
    """The commands of a shell or console block, continuation lines joined."""
    found: list[Command] = []
    current: Command | None = None
    continuing = False
    for offset, raw in enumerate(block.text.splitlines()):
        number = block.line + 1 + offset
        if continuing and current is not None:
            current.text += "\n" + raw
            continuing = raw.endswith("\\")
            continue
        if block.kind == "console" and not raw.startswith("$ "):
            if current is None and raw.strip():
                raise ValueError(f"{block.path}:{number}: output before the first `$ ` command")
            if current is not None:
                current.output.append(raw)
            continue
        if block.kind != "console" and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current = Command(number, raw[2:] if block.kind == "console" else raw)
        found.append(current)
        continuing = raw.endswith("\\")
    return found


LONG_RUNNING = re.compile(  # in command position: first, or after && ; | (a path before it is fine)
    r"(?:^|[;&|]\s*)(?:\S*/|python3?\s+-m\s+)?(?P<program>sse-tasks\s+serve|uvicorn|redis-server|celery)\b"
    r"(?P<args>[^;&|#]*)"
)
DEFAULT_PORTS = {"sse-tasks serve": DEMO_PORT, "uvicorn": DEMO_PORT, "redis-server": REDIS_PORT}
PORT_OPTION = re.compile(r"--port[ =](\d+)")
LOCAL_PORT = re.compile(r"\b(localhost|127\.0\.0\.1):(\d{2,5})\b")


@dataclass(frozen=True)
class Server:
    """What a long-running command is and the port it listens on as written (None: no port)."""

    program: str
    port: int | None
    explicit: bool


def server_of(command: str) -> Server | None:
    """The long-running program a command starts, if it starts one."""
    code = strip_comment(command)
    for match in LONG_RUNNING.finditer(code):
        program = re.sub(r"\s+", " ", match["program"])
        if program == "celery":
            if re.search(r"\bworker\b", match["args"]):
                return Server("celery worker", None, False)
            continue
        given = PORT_OPTION.search(match["args"])
        return Server(program, int(given[1]) if given else DEFAULT_PORTS[program], given is not None)
    return None


def strip_comment(command: str) -> str:
    """The command without a trailing ``# comment`` (quotes respected)."""
    quote = None
    for index, char in enumerate(command):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or command[index - 1].isspace()):
            return command[:index].rstrip()
    return command.rstrip()


def _ports_served(servers: list[Command]) -> set[int]:
    return {s.port for c in servers if (s := server_of(c.text)) is not None and s.port is not None}


def ports_used(text: str) -> set[int]:
    """Ports a snippet talks to on this machine (``localhost:N``, ``127.0.0.1:N``)."""
    return {int(match[2]) for match in LOCAL_PORT.finditer(text)}


def submits(command: str) -> bool:
    """Does the command start a task (so its answer carries the task's id)?"""
    return bool(re.search(r"-X\s*POST\b|\bsse-tasks\s+submit\b", strip_comment(command)))


PLACEHOLDER = re.compile(r"<id>|(?<![\w-])[\w-]*…")
TASK_ID = re.compile(r'"id"\s*:\s*"([\w-]+)"|/tasks/([\w-]+)')


def task_id_in(output: str) -> str | None:
    """The first task id in a command's output (a snapshot's ``"id"`` or a ``/tasks/<id>`` URL)."""
    match = TASK_ID.search(output)
    return (match[1] or match[2]) if match else None


# -- install commands ---------------------------------------------------------------------

VENV = re.compile(r"(?:\S*/)?python3?(?:\.\d+)?\s+-m\s+venv\s+[^;&|#\n]*")
PIP_INSTALL = re.compile(r"(?:\S*/)?(?:pip3?|python3?(?:\.\d+)?\s+-m\s+pip)\s+install\s+(?P<args>[^;&|#\n]*)")


def missing_requirements(args: str) -> list[str]:
    """What ``pip install ARGS`` would install that this environment lacks."""
    from packaging.requirements import Requirement

    extras_table = _extras()
    wanted: list[str] = []
    for arg in shlex.split(args):
        if arg.startswith("-"):
            continue
        local = re.fullmatch(r"\.(?:\[(?P<extras>[\w,\s-]+)\])?", arg)
        if local is None:
            wanted.append(arg)
            continue
        wanted.append("sse-tasks")
        for extra in (local["extras"] or "").split(","):
            if extra.strip():
                if extra.strip() not in extras_table:
                    raise ValueError(f"sse-tasks has no extra {extra.strip()!r} ({arg})")
                wanted.extend(extras_table[extra.strip()])
    missing = []
    for text in wanted:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (have {version})")
    return missing


def _extras() -> dict[str, list[str]]:
    """The installed sse-tasks distribution's extras and their requirements."""
    from packaging.requirements import Requirement

    metadata = importlib.metadata.metadata("sse-tasks")
    table: dict[str, list[str]] = {name: [] for name in metadata.get_all("Provides-Extra") or []}
    for text in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        for name, requirements in table.items():
            if requirement.marker is not None and requirement.marker.evaluate({"extra": name}):
                requirement.marker = None
                requirements.append(str(requirement))
    return table


def without_installs(command: str) -> str:
    """Install commands made no-ops (``: …``); skips the test if one would install anything."""

    def venv(match: re.Match[str]) -> str:
        if importlib.util.find_spec("sse_tasks") is None:
            pytest.skip("sse_tasks is not importable here, so a new environment would need an install")
        return ": " + match[0]

    def pip(match: re.Match[str]) -> str:
        missing = missing_requirements(match["args"])
        if missing:
            pytest.skip(f"`{match[0].strip()}` would install {', '.join(missing)}")
        return ": " + match[0]

    return PIP_INSTALL.sub(pip, VENV.sub(venv, command))


# -- output shapes ------------------------------------------------------------------------

SSE_FIELD = re.compile(r"^(id|event|data|retry):\s?(.*)$")
DRAWN = re.compile("[\u2500-\u259f\u2800-\u28ff]")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
ELIDED = re.compile(r"[\w-]*…")


def _pattern(expected: str) -> re.Pattern[str]:
    parts: list[str] = []
    for piece in re.split(r"([\w-]*…|\d+(?:\.\d+)?|\s+)", expected):
        if not piece:
            continue
        if ELIDED.fullmatch(piece):
            parts.append(".*?")
        elif NUMBER.fullmatch(piece):
            parts.append(NUMBER.pattern)
        elif piece.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def _line_matches(expected: str, actual: str) -> bool:
    sse = SSE_FIELD.match(expected)
    if sse:
        name, value = sse.groups()
        got = SSE_FIELD.match(actual)
        if got is None or got[1] != name:
            return False
        if name == "id":
            return True
        return value == got[2] if name in ("event", "retry") else bool(_pattern(value).fullmatch(got[2]))
    return bool(_pattern(expected).fullmatch(actual))


def shape_mismatch(expected: list[str], actual: str) -> str | None:
    """Why ``actual`` does not have the shape of the ``expected`` lines, or None if it has."""
    wanted = [line.rstrip() for line in expected if line.strip() and line.strip() != "…"]
    wanted = [line for line in wanted if not DRAWN.search(line)]
    lines = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for line in wanted:
        while position < len(lines) and not _line_matches(line, lines[position]):
            position += 1
        if position == len(lines):
            return f"no line of the output (after the ones matched before) has the shape of:\n  {line}"
        position += 1
    return None


# -- signatures ---------------------------------------------------------------------------


def signature_mismatch(documented: str, target: str) -> str | None:
    """Why the documented call ``Name(params)`` is not ``target``'s signature, or None."""
    import ast

    name, _, params = documented.strip().partition("(")
    params = strip_comment(params).rstrip()
    tree = ast.parse(f"def {name.strip()}({params.removesuffix(')')}): pass")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    module, _, attribute = target.rpartition(".")
    real = inspect.signature(getattr(importlib.import_module(module), attribute))
    args = function.args
    kinds: list[tuple[str, str, Any]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults)) + [
        ast.literal_eval(d) for d in args.defaults
    ]
    kinds += [(a.arg, "POSITIONAL_OR_KEYWORD", d) for a, d in zip(positional, defaults, strict=True)]
    if args.vararg:
        kinds.append((args.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    kinds += [
        (a.arg, "KEYWORD_ONLY", inspect.Parameter.empty if d is None else ast.literal_eval(d))
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    if args.kwarg:
        kinds.append((args.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    actual = [(p.name, p.kind.name, p.default) for p in real.parameters.values()]
    documented_kinds, real_kinds = [k[:2] for k in kinds], [a[:2] for a in actual]
    if documented_kinds != real_kinds:
        return f"parameters differ:\n  documented {documented_kinds}\n  real       {real_kinds}"
    for (pname, _, doc_default), (_, _, real_default) in zip(kinds, actual, strict=True):
        if doc_default != real_default:
            return f"default of {pname}: documented {doc_default!r}, real {real_default!r}"
    return None


# -- processes ----------------------------------------------------------------------------


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Background:
    """A long-running command in its own process group, its output in a log file."""

    what: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def failure(self, why: str) -> str:
        return f"{self.what}\n{why}; its output:\n{self.text()[-3000:]}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (port_answers(self.port) if self.port is not None else self.log.stat().st_size > 0):
            if self.proc.poll() is not None:
                pytest.fail(self.failure(f"exited ({self.proc.returncode}) before it was ready"))
            if time.monotonic() > deadline:
                pytest.fail(self.failure(f"not ready after {READY_TIMEOUT:.0f} s"))
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then, after a short grace, SIGKILL to whatever is left of the group."""
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_TIMEOUT)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:  # the whole group has exited
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def background(
    what: str, argv: list[str], cwd: Path, env: dict[str, str], log: Path, port: int | None
) -> Iterator[Background]:
    """Start ``argv``, wait until it is ready, and stop its whole process group afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Background(what, proc, log, port)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


CURL_WRAPPER = """#!/usr/bin/env bash
# curl that fails on an HTTP error status, unless the command chose --fail itself.
for arg in "$@"; do
  if [[ $arg == --fail* || ( $arg == -[a-zA-Z]* && $arg != --* && $arg == *f* ) ]]; then
    exec {curl} "$@"
  fi
done
exec {curl} --fail-with-body "$@"
"""


@dataclass(frozen=True)
class Result:
    """A finished command: its status and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def both(self) -> str:
        return self.stdout + ("\n--- stderr:\n" + self.stderr if self.stderr.strip() else "")


# -- running a block ----------------------------------------------------------------------


@dataclass
class Services:
    """What the suite provides, each asked for only when a block needs it."""

    demo_port: Callable[[], int]  # a real `sse-tasks serve` (demo, memory://)
    redis_url: Callable[[], str]  # the suite's redis-server (skips the test when missing)


class BlockRun:
    """One block run in its own working copy against the servers it needs."""

    def __init__(self, root: Path, doc: list[Block], block: Block, tmp: Path, services: Services) -> None:
        self.root, self.doc, self.block, self.services = root, doc, block, services
        self.tmp = tmp
        self.work = tmp / "work"
        self.ports: dict[int, int] = {}
        self.task_id: str | None = None
        self.running: list[Background] = []
        self.shell_options: list[str] = []  # `set -o …` typed earlier in a console block
        self._servers = ExitStack()  # stops every server started, last first

    # -- set-up --

    def _earlier(self) -> list[Block]:
        index = self.doc.index(self.block)
        return [b for b in reversed(self.doc[:index]) if b.skip is None]

    def _working_copy(self, texts: list[str]) -> dict[str, str]:
        self.work.mkdir(parents=True)
        shutil.copytree(
            self.root / "examples", self.work / "examples", ignore=shutil.ignore_patterns("__pycache__")
        )
        for copied in ("pyproject.toml", "README.md"):
            shutil.copy(self.root / copied, self.work / copied)
        (self.work / ".venv").symlink_to(sys.prefix)
        for earlier in self._earlier():  # files the reader saved from this document so far
            saved = earlier.marker("file")
            if saved and not (self.work / saved).exists():
                (self.work / saved).write_text(earlier.text)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSE_TASKS_", "CELERY_"))}
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", NO_COLOR="1")
        if any("celery" in text.lower() for text in texts):
            url = self._redis_db(CELERY_DB)
            env["SSE_TASKS_BROKER"] = url
            self._flush(CELERY_DB, CELERY_DB + 1)
        return env

    def _redis_db(self, db: int) -> str:
        base = self.services.redis_url().partition("?")[0]
        return base.rsplit("/", 1)[0] + f"/{db}"

    def _flush(self, *dbs: int) -> None:
        import redis

        for db in dbs:
            client = redis.Redis.from_url(self._redis_db(db))
            client.flushdb()
            client.close()

    def _context(self, own: list[Command], used: set[int]) -> list[tuple[Block, Command]]:
        """Servers of earlier blocks for the ports this block uses but does not serve."""
        wanted = used - _ports_served(own)
        context: list[tuple[Block, Command]] = []
        for earlier in self._earlier():
            if earlier.kind == "python" or not wanted:
                continue
            servers = [c for c in commands(earlier) if server_of(c.text)]
            if _ports_served(servers) & wanted:
                context = [(earlier, c) for c in servers] + context
                wanted -= _ports_served(servers)
        return context

    def _prelude(self, own: list[Command]) -> list[Command]:
        """Submitting commands of an earlier block, when a placeholder has no id to take yet."""
        for command in own:
            if submits(command.text):
                return []
            if PLACEHOLDER.search(strip_comment(command.text)):
                break
        else:
            return []
        for earlier in self._earlier():
            if earlier.kind != "python":
                found = [c for c in commands(earlier) if submits(c.text) and not server_of(c.text)]
                if found:
                    return found
        pytest.fail(f"{self.block.id}: a placeholder, and no earlier command that submits a task")

    def _map_ports(self, servers: list[Command], used: set[int]) -> None:
        for command in servers:
            server = server_of(command.text)
            if server is not None and server.port is not None and server.port not in self.ports:
                self.ports[server.port] = free_port()
        for port in sorted(used - self.ports.keys()):
            if port == DEMO_PORT:
                self.ports[port] = self.services.demo_port()
            elif port == REDIS_PORT:
                self.ports[port] = int(self.services.redis_url().split(":")[2].split("/")[0])
            # any other port stays as written: an origin, or a request bound to fail

    def rewrite_ports(self, text: str) -> str:
        text = LOCAL_PORT.sub(lambda m: f"{m[1]}:{self.ports.get(int(m[2]), int(m[2]))}", text)
        return PORT_OPTION.sub(lambda m: f"--port {self.ports.get(int(m[1]), int(m[1]))}", text)

    # -- shell --

    def _prepare(self, command: str) -> str:
        text = self.rewrite_ports(without_installs(command))
        server = server_of(command)
        if server is not None and server.port is not None:
            code, comment = strip_comment(text), text[len(strip_comment(text)) :]
            if not server.explicit:
                code += f" --port {self.ports[server.port]}"
            if server.program == "redis-server":
                code += " --bind 127.0.0.1"
            text = code + comment
        if PLACEHOLDER.search(strip_comment(text)):
            if self.task_id is None:
                pytest.fail(f"{self.block.id}: no task id for the placeholder in: {command}")
            code = PLACEHOLDER.sub(self.task_id, strip_comment(text))
            text = code + text[len(strip_comment(text)) :]
        return text

    def _start(self, block: Block, command: Command, env: dict[str, str]) -> None:
        server = server_of(command.text)
        assert server is not None
        text = self._prepare(command.text)
        log = self.tmp / f"server-{len(self.running)}.log"
        port = self.ports[server.port] if server.port is not None else None
        manager = background(
            f"{block.path}:{command.line}: {text}",
            ["bash", "-euo", "pipefail", "-c", text],
            self.work,
            env,
            log,
            port,
        )
        self.running.append(self._servers.enter_context(manager))

    def _run(self, command: Command, env: dict[str, str], console: bool, status: int) -> Result:
        text = self._prepare(command.text)
        if console:  # as typed at a prompt; `(exit N)` gives `echo $?` the previous status
            options = "".join(f"{option}; " for option in self.shell_options)
            argv = ["bash", "-c", options + (f"(exit {status}); {text}" if "$?" in text else text)]
            if command.text.startswith("set -o ") or command.text.startswith("set +o "):
                # a prompt keeps its options for the commands that follow
                self.shell_options.append(command.text.split("#", 1)[0].strip())
        else:
            argv = ["bash", "-euo", "pipefail", "-c", text]
        result = self._subprocess(argv, env, f"line {command.line}: `{text}`")
        found = task_id_in(result.stdout)
        if found:
            self.task_id = found
        return result

    def _subprocess(self, argv: list[str], env: dict[str, str], what: str) -> Result:
        try:
            done = subprocess.run(
                argv,
                cwd=self.work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            late = Result(
                -1, (exc.stdout or b"").decode(errors="replace"), (exc.stderr or b"").decode(errors="replace")
            )
            pytest.fail(f"{what} did not end in {COMMAND_TIMEOUT:.0f} s:\n{late.both[-3000:]}")
        return Result(
            done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        )

    def run_shell(self) -> None:
        own = commands(self.block)
        console = self.block.kind == "console"
        prelude = self._prelude(own)
        texts = [c.text for c in own + prelude]
        context = self._context(own, ports_used("\n".join(texts)))
        texts += [c.text for _, c in context]
        env = self._working_copy(texts)
        curl = shutil.which("curl")
        if not console and curl:
            wrappers = self.tmp / "bin"
            wrappers.mkdir()
            (wrappers / "curl").write_text(CURL_WRAPPER.format(curl=shlex.quote(curl)))
            (wrappers / "curl").chmod(0o755)
            env["PATH"] = f"{wrappers}{os.pathsep}{env['PATH']}"
        servers = [c for _, c in context] + [c for c in own if server_of(c.text)]
        self._map_ports(servers, ports_used("\n".join(texts)) | _ports_served(servers))
        try:
            for block, command in context:
                self._start(block, command, env)
            for command in prelude:
                result = self._run(command, env, console=False, status=0)
                if result.code:
                    pytest.fail(
                        f"line {command.line} (run for its task id) exited {result.code}:\n{result.both}"
                    )
            self._run_own(own, env, console)
            for started in self.running:
                if started.proc.poll() is not None:
                    pytest.fail(started.failure(f"exited ({started.proc.returncode}) before the block ended"))
        finally:
            self._servers.close()
            if "SSE_TASKS_BROKER" in env:
                self._flush(CELERY_DB, CELERY_DB + 1)

    def _run_own(self, own: list[Command], env: dict[str, str], console: bool) -> None:
        status = 0
        for index, command in enumerate(own):
            if server_of(command.text):
                self._start(self.block, command, env)
                continue
            shows_status = console and index + 1 < len(own) and "$?" in own[index + 1].text
            result = self._run(command, env, console, status)
            where = f"{self.block.path}:{command.line}: {command.text}"
            if result.code and not shows_status:
                pytest.fail(f"{where}\nexited {result.code}; its output:\n{result.both[-3000:]}")
            status = result.code
            if console and "$?" in command.text:
                if [line.strip() for line in command.output if line.strip()] != result.stdout.split():
                    pytest.fail(f"{where}\nshows {command.output!r}, printed {result.stdout!r}")
            elif console and command.output:
                # stdout first: a terminal would not show curl's progress meter on stderr
                why = shape_mismatch(command.output, result.stdout)
                if why and shape_mismatch(command.output, result.both) is not None:
                    pytest.fail(f"{where}\n{why}\nits output:\n{result.both[-3000:]}")

    # -- python --

    def run_python(self) -> None:
        target = self.block.marker("signature of")
        if target:
            why = signature_mismatch(self.block.text, target)
            if why:
                pytest.fail(f"{self.block.id}: not the signature of {target}: {why}")
            return
        code = self._chain()
        context = self._context([], ports_used(code))
        env = self._working_copy([code] + [c.text for _, c in context])
        servers = [c for _, c in context]
        self._map_ports(servers, ports_used(code) | _ports_served(servers))
        code = self.rewrite_ports(code)
        name = self.block.marker("file")
        if name:
            (self.work / name).write_text(code)
            argv = [sys.executable, "-W", "error", "-c", f"import {Path(name).stem}"]
        else:
            (self.work / "snippet.py").write_text(code)
            argv = [sys.executable, "-W", "error", "snippet.py"]
        try:
            for block, command in context:
                self._start(block, command, env)
            result = self._subprocess(argv, env, self.block.id)
            if result.code:
                pytest.fail(
                    f"{self.block.id} exited {result.code}:\n{result.both[-4000:]}\n--- the code run:\n{code}"
                )
        finally:
            self._servers.close()
            if "SSE_TASKS_BROKER" in env:
                self._flush(CELERY_DB, CELERY_DB + 1)

    def _chain(self) -> str:
        """The block's code, after the earlier blocks it continues."""
        if self.block.marker("continues") is None:
            return self.block.text
        index = self.doc.index(self.block)
        parts = [self.block.text]
        for earlier in reversed(self.doc[:index]):
            if earlier.kind != "python" or earlier.skip is not None or earlier.marker("signature of"):
                continue
            parts.insert(0, earlier.text)
            if earlier.marker("continues") is None:
                return "\n".join(parts)
        pytest.fail(f"{self.block.id} continues, but no earlier python block starts the program")


def run(root: Path, doc: list[Block], block: Block, tmp: Path, services: Services) -> None:
    """Run one block (fails or skips the calling test)."""
    if block.skip is not None:
        pytest.skip(block.skip)
    runner = BlockRun(root, doc, block, tmp, services)
    if block.kind == "python":
        runner.run_python()
    else:
        runner.run_shell()
