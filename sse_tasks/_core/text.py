"""Untrusted text and numbers: lone surrogates made safe, digits parsed strictly."""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """``text`` with each lone UTF-16 surrogate replaced by U+FFFD, so it encodes as UTF-8.

    A surrogate pair written as two code points becomes the character it encodes.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


#: Characters a task's progress message or error message keeps: each is in every
#: snapshot and event of the task, which the history holds thousands of.
MAX_MESSAGE_LENGTH = 4096


def short_text(value: object) -> str:
    """``value`` as text (:func:`clean_text`), cut to :data:`MAX_MESSAGE_LENGTH`
    characters, the last of them "…" where it was longer."""
    text = clean_text(str(value))
    if len(text) > MAX_MESSAGE_LENGTH:
        return text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def escape_controls(text: str) -> str:
    """``text`` on one line, each control character (an escape, a bell, a line break) written
    as ``\\xNN``: a server's or a task's text is shown on a terminal, never obeyed."""
    return _CONTROL.sub(lambda char: f"\\x{ord(char[0]):02x}", text)


def has_lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` (decoded JSON, keys included) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def ascii_int(raw: str, max_digits: int = 18) -> int | None:
    """``raw`` as a non-negative integer if it is 1 to ``max_digits`` ASCII digits, else None.

    ``str.isdigit()`` alone accepts "²" and other digits ``int()`` refuses or reads
    differently ("١٢" is 12), so every number a client sends is parsed here.
    """
    if not (0 < len(raw) <= max_digits and raw.isascii() and raw.isdigit()):
        return None
    return int(raw)
