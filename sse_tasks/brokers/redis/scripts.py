"""The broker's Lua scripts, loaded from the ``.lua`` files beside this module.

Each file names its keys and arguments in its header (``-- KEYS: a b``, ``-- ARGV: x y``,
``...`` last for a variable rest) and may pull in a shared fragment with
``-- include: name`` (a file beside it, or a fragment generated from Python: ``terminal``,
the terminal states as the set ``TERMINAL``; ``task_keys``, ``task_key(id)`` and
``output_key(id)`` from ``keys.py``). The loader turns the names into Lua locals, so a script reads
``task`` and ``lease_ms`` rather than ``KEYS[3]`` and ``ARGV[11]``, and callers pass
keyword arguments checked against the header.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ..._core.models import TERMINAL
from .keys import lua_task_keys


@functools.cache
def _text(name: str) -> str:
    generated = _GENERATED.get(name)
    if generated is not None:
        return generated()
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _terminal() -> str:
    states = ", ".join(f"{state.value} = true" for state in sorted(TERMINAL, key=lambda s: s.value))
    return f"local TERMINAL = {{{states}}}"


_GENERATED = {"terminal": _terminal, "task_keys": lua_task_keys}


class Script:
    """One Lua script with named keys and arguments."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: tuple[str, ...] = ()
        self.args: tuple[str, ...] = ()
        self.variadic = False
        body: list[str] = []
        for line in _text(name).splitlines():
            head, _, rest = line.partition(":")
            if head == "-- KEYS":
                self.keys = tuple(rest.split())
            elif head == "-- ARGV":
                names = rest.split()
                self.variadic = bool(names) and names[-1] == "..."
                self.args = tuple(n for n in names if n != "...")
            elif head == "-- include":
                body.append(_text(rest.strip()))
                continue
            body.append(line)
        self._key_values = _values_of(self.keys)
        self._arg_values = _values_of(self.args)
        prologue = [_locals(self.keys, "KEYS"), _locals(self.args, "ARGV")]
        self.source = "\n".join([*filter(None, prologue), *body]) + "\n"
        self._script: AsyncScript | None = None

    async def __call__(
        self, client: Redis, keys: Mapping[str, str], args: Mapping[str, Any], rest: Sequence[Any] = ()
    ) -> Any:
        """Run on ``client``; ``keys`` and ``args`` by the names in the header."""
        key_list, arg_list = self._lists(keys, args, rest)
        if self._script is None:
            self._script = client.register_script(self.source)
        return await self._script(key_list, arg_list, client=client)

    def command(
        self, keys: Mapping[str, str], args: Mapping[str, Any], rest: Sequence[Any] = ()
    ) -> tuple[Any, ...]:
        """The ``EVALSHA`` that runs it, for a :class:`~.wire.Wire` (whose caller loads the
        script if Redis answers NOSCRIPT: :attr:`source`)."""
        key_list, arg_list = self._lists(keys, args, rest)
        return ("EVALSHA", self.sha, len(key_list), *key_list, *arg_list)

    @functools.cached_property
    def sha(self) -> str:
        import hashlib

        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def _lists(
        self, keys: Mapping[str, str], args: Mapping[str, Any], rest: Sequence[Any]
    ) -> tuple[list[str], list[Any]]:
        # Lengths here, names below (a missing one is a KeyError): this runs on every publish.
        if len(keys) != len(self.keys) or len(args) != len(self.args) or (rest and not self.variadic):
            raise TypeError(f"{self.name}.lua takes KEYS {self.keys} and ARGV {self.args}")
        return self._key_values(keys), [*self._arg_values(args), *rest]


def _values_of(names: Sequence[str]) -> Callable[[Mapping[str, Any]], list[Any]]:
    """The values of ``names`` in a mapping, in order (a ``KeyError`` for one missing)."""
    if not names:
        return lambda mapping: []
    get = operator.itemgetter(*names)  # (one C call: this runs on every publish)
    if len(names) == 1:
        return lambda mapping: [get(mapping)]
    return lambda mapping: list(get(mapping))


def _locals(names: Sequence[str], table: str) -> str:
    if not names:
        return ""
    values = ", ".join(f"{table}[{i}]" for i in range(1, len(names) + 1))
    return f"local {', '.join(names)} = {values}"


class Scripts:
    """The scripts one broker runs (each registers with Redis on first use)."""

    def __init__(self) -> None:
        self.publish = Script("publish")
        self.sync = Script("sync")
        self.history = Script("history")
        self.renew = Script("renew")
        self.lapsed = Script("lapsed")
        self.output = Script("output")
        self.outputs = Script("outputs")
        self.refuse = Script("refuse")
        self.chunks = Script("chunks")
