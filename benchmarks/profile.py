"""A text breakdown of a py-spy profile: ``python -m benchmarks.profile STACKS.txt``.

``STACKS.txt`` is what ``py-spy record --format raw`` writes (one collapsed stack per
line, ``frame;frame;… count``), e.g. from ``python -m benchmarks --profile DIR``. The
breakdown: where the samples end (self time by package and by function) and which
functions hold them (inclusive, each counted once per stack).
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    "sse_tasks",
    "sse_starlette",
    "starlette",
    "uvicorn",
    "anyio",
    "redis",
    "asyncio",
    "uvloop",
    "httptools",
    "orjson",
    "aiohttp",
)


def package(path: str) -> str:
    """The package a frame's file belongs to (``sse_tasks/web``: the subpackage)."""
    parts = path.replace("\\", "/").split("/")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in _PACKAGES:
            if parts[index] == "sse_tasks" and index + 2 < len(parts):
                return f"sse_tasks/{parts[index + 1]}"
            return parts[index]
    return "other" if path else "native"


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    func, path = match["func"], match["file"]
    short = "/".join(path.split("/")[-2:])
    return f"{func} ({short})", package(path)


def summarize(stacks: str, top: int = 25) -> str:
    """The breakdown of the collapsed stacks in ``stacks``."""
    total = 0
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in stacks.splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in body.split(";")[1:] or body.split(";")]  # [0] is the thread
        if not frames:
            continue
        leaf, leaf_pkg = frames[-1]
        self_pkg[leaf_pkg] += n
        self_fn[leaf] += n
        for name in {name for name, _ in frames}:
            inclusive[name] += n
    if not total:
        return "no samples\n"
    out = [f"{total} samples"]

    def table(title: str, counter: Counter[str], limit: int) -> None:
        out.append(f"\n{title}")
        for name, n in counter.most_common(limit):
            out.append(f"  {100 * n / total:5.1f}%  {name}")

    table("self time by package", self_pkg, 15)
    table("self time by function", self_fn, top)
    table("inclusive time by function", inclusive, top)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.strip().split("\n")[0], file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8", errors="replace") as stacks:
        sys.stdout.write(summarize(stacks.read()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
