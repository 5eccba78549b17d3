"""Reading back what finalcopy keeps in ``DEST/.finalcopy/``, which anyone could have written.

The manifest (:mod:`.manifest`), ``state.jsonl`` and ``names.tsv``
(:mod:`.state`) are untrusted when read back: anyone who can write DEST can
write them. Their readers share the rules below: they never raise, read at
most :data:`MAX_FILE_BYTES` and lines of at most :data:`MAX_LINE_BYTES`,
and yield only relative paths without empty, ``.`` or ``..`` components,
NUL, or a leading ``/`` (:func:`path_problem`); every line they skip is
named, with its reason, in :attr:`Parsed.problems`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

MAX_FILE_BYTES = 1 << 30
"""Largest manifest, state or names file read back (about 5 million files)."""
MAX_LINE_BYTES = 128 * 1024
"""Longest line read back; every line finalcopy writes for a valid path fits."""
MAX_PATH_BYTES = 16 * 1024
"""Longest relative path accepted when reading back."""

T = TypeVar("T")


@dataclass
class Parsed(Generic[T]):
    """What a file read back holds, and why each skipped line was skipped."""

    entries: dict[str, T] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """``"line N: reason: 'text'"`` per skipped line (or one for the whole file)."""


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted with every control character escaped: safe on any terminal."""
    quoted = repr(text[:limit])
    return quoted + ("…" if len(text) > limit else "")


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a relative path inside the tree, or None when it is."""
    if not path:
        return "empty path"
    if "\0" in path:
        return "NUL in path"
    if path[0] == "/":
        return "absolute path"
    padded = f"/{path}/"
    if "//" in padded:
        return "empty component in path"
    for dots in ("/./", "/../"):
        if dots in padded:
            return f"a '{dots[1:-1]}' component in path"
    if path.isascii():
        size = len(path)
    else:
        try:
            raw = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return "not a file name (lone surrogate)"
        if raw.decode("utf-8", "surrogateescape") != path:
            return "not a file name (surrogates standing for valid UTF-8)"
        size = len(raw)
    if size > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES} bytes"
    return None


def numbered_lines(data: bytes, parsed: Parsed[T]) -> Iterator[tuple[int, str]]:
    """Numbered, decoded lines of ``data`` within the bounds; the rest become problems."""
    if len(data) > MAX_FILE_BYTES:
        parsed.problems.append(f"larger than {MAX_FILE_BYTES} bytes: not read")
        return
    for number, raw in enumerate(data.split(b"\n"), 1):
        if len(raw) > MAX_LINE_BYTES:
            parsed.problems.append(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
            continue
        yield number, raw.decode("utf-8", "surrogateescape")


def unescape(text: str, table: Mapping[str, str]) -> str | None:
    """``text`` with each ``\\<c>`` replaced by ``table[c]``; None for a ``c`` not in it."""
    out: list[str] = []
    start = 0
    while (i := text.find("\\", start)) >= 0:
        replacement = table.get(text[i + 1 : i + 2])
        if replacement is None:
            return None
        out += (text[start:i], replacement)
        start = i + 2
    out.append(text[start:])
    return "".join(out)
