"""Names NTFS and Windows cannot hold, and a reversible mapping for them.

ntfs-3g itself stores almost anything in the POSIX namespace, but Windows
cannot open (or even list correctly) a file called ``a:b``, ``CON.txt``,
``notes.`` or two files ``Photo.jpg`` and ``photo.jpg`` in one folder; mounts
made with ``windows_names`` (udisks does this) refuse them outright. The
rules below are Microsoft's "Naming Files, Paths, and Namespaces":

* no ``<>:"\\|?*`` and no control character (0x00-0x1F);
* no trailing dot or space (Windows strips them, so the name changes);
* no device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9 and the superscript
  COM¹²³/LPT¹²³), with or without an extension, in any case;
* at most 255 UTF-16 code units per component;
* valid UTF-8 (ntfs-3g converts names to UTF-16 and refuses the rest);
* no two names in one folder equal but for case (:func:`fold_case`).

**Case policy.** ntfs-3g is case-sensitive, so both names *could* be stored,
but Windows (and the Linux ``ntfs3`` driver's default) sees one of them only.
A copy meant for Windows users must not silently hide a file, so the default
is to reject; ``--ntfs-names map`` keeps the first name (in code point order)
and gives the others a numbered suffix.

**Mapping** (``--ntfs-names map``) follows rclone's ``lib/encoder``
(``encoder.EncodeWin | EncodeCtl | EncodeRightSpace | EncodeRightPeriod |
EncodeInvalidUtf8``, the set its local backend uses on Windows, see
``backend/local/encode_windows.go``), so names look the same as after an
``rclone copy`` to Windows:

==========================  ===========================================
``<>:"\\|?*``               fullwidth forms (``:`` → ``：`` U+FF1A)
control 0x00-0x1F           Control Pictures (0x01 → ``␁`` U+2401)
trailing space / dot        ``␠`` U+2420 / ``．`` U+FF0E (last one only)
invalid UTF-8 byte          ``‛`` + two hex digits (0xFF → ``‛FF``)
a replacement already used  quoted with ``‛`` U+201B, as rclone does
==========================  ===========================================

rclone has no rule for device names; here the first letter becomes fullwidth
(``CON.txt`` → ``ＣON.txt``), and a name that *already* starts that way is
quoted. Case collisions get ``‛~2``, ``‛~3``… before the extension: an
unquoted ``‛~`` never comes out of the character mapping, so the suffix is
unambiguous. :func:`decode_name` undoes all of it, so every stored name can
be turned back into the original without the ``names.tsv`` table.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "NameCheck",
    "add_suffix",
    "check_names",
    "decode_name",
    "decode_path",
    "encode_name",
    "encode_path",
    "fold_case",
    "name_reasons",
]

RESERVED_CHARS = '<>:"\\|?*'
MAX_UTF16_UNITS = 255
QUOTE = "\u201b"  # SINGLE HIGH-REVERSED-9 QUOTATION MARK, rclone's QuoteRune
FULLWIDTH_OFFSET = 0xFEE0  # "!" .. "~" + offset = their FULLWIDTH forms
CONTROL_PICTURES = 0x2400  # SYMBOL FOR NULL; 0x00-0x1F + offset = ␀..␟
TRAILING_SPACE = "\u2420"  # SYMBOL FOR SPACE
TRAILING_DOT = "\uff0e"  # FULLWIDTH FULL STOP
SUFFIX_MARK = QUOTE + "~"

# Microsoft documents COM0/LPT0 and the superscript digits as reserved too.
_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"]
)
_TO_FULLWIDTH = {c: chr(ord(c) + FULLWIDTH_OFFSET) for c in RESERVED_CHARS}
_FROM_FULLWIDTH = {v: k for k, v in _TO_FULLWIDTH.items()}
# Characters the mapping produces anywhere; finding one in a source name means quoting it.
_PRODUCED = frozenset([QUOTE, *_FROM_FULLWIDTH, *(chr(CONTROL_PICTURES + n) for n in range(32))])
_HEX = frozenset("0123456789ABCDEF")
_SUFFIX = re.compile(r"[0-9]+")


def _utf16_units(name: str) -> int:
    return len(name.encode("utf-16-le", "surrogatepass")) // 2


def _is_escaped_byte(c: str) -> bool:
    # os.fsdecode turns each byte of invalid UTF-8 into U+DC80..U+DCFF.
    return "\udc80" <= c <= "\udcff"


def _is_device(name: str) -> bool:
    # Windows looks at the part before the first dot, ignoring trailing spaces.
    return name.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES


def _is_fullwidth_letter(c: str) -> bool:
    return "\uff21" <= c <= "\uff3a" or "\uff41" <= c <= "\uff5a"


def fold_case(name: str) -> str:
    """The form NTFS compares names in: per-character simple upper case.

    NTFS uppercases each UTF-16 unit through its ``$UpCase`` table; it never
    expands ``ß`` to ``SS`` as :meth:`str.upper` does, hence per character.
    """
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def name_reasons(name: str) -> list[str]:
    """Why Windows cannot hold the single component ``name`` (empty: it can)."""
    reasons: list[str] = []
    bad = sorted({c for c in name if c in RESERVED_CHARS})
    if bad:
        reasons.append("reserved character " + " ".join(repr(c) for c in bad))
    controls = sorted({c for c in name if c < " "})
    if controls:
        reasons.append("control character " + " ".join(f"0x{ord(c):02X}" for c in controls))
    if any(_is_escaped_byte(c) for c in name):
        reasons.append("not valid UTF-8")
    elif _utf16_units(name) > MAX_UTF16_UNITS:
        reasons.append(f"longer than {MAX_UTF16_UNITS} UTF-16 units ({_utf16_units(name)})")
    if name.endswith("."):
        reasons.append("ends with a dot")
    elif name.endswith(" "):
        reasons.append("ends with a space")
    if _is_device(name):
        reasons.append(f"reserved device name {name.split('.', 1)[0].rstrip(' ').upper()}")
    return reasons


def encode_name(name: str) -> str:
    """Map one component to a name Windows can hold; :func:`decode_name` reverses it."""
    last = len(name) - 1
    out: list[str] = []
    for i, c in enumerate(name):
        if c in _PRODUCED or (i == last and c in (TRAILING_SPACE, TRAILING_DOT)):
            out.append(QUOTE + c)
        elif c in _TO_FULLWIDTH:
            out.append(_TO_FULLWIDTH[c])
        elif c < " ":
            out.append(chr(CONTROL_PICTURES + ord(c)))
        elif _is_escaped_byte(c):
            out.append(f"{QUOTE}{ord(c) - 0xDC00:02X}")
        elif i == last and c == " ":
            out.append(TRAILING_SPACE)
        elif i == last and c == ".":
            out.append(TRAILING_DOT)
        else:
            out.append(c)
    if name and _is_device(name):
        out[0] = chr(ord(name[0]) + FULLWIDTH_OFFSET)
    elif name and _is_fullwidth_letter(name[0]) and _is_device(_narrow(name[0]) + name[1:]):
        out[0] = QUOTE + name[0]
    return "".join(out)


def _narrow(c: str) -> str:
    return chr(ord(c) - FULLWIDTH_OFFSET)


def _split_suffix(stored: str) -> tuple[str, int]:
    """Remove an unquoted ``‛~N`` collision suffix; returns (name, N or 0)."""
    i = 0
    while i < len(stored):
        if stored[i] != QUOTE:
            i += 1
        elif stored.startswith(SUFFIX_MARK, i):
            match = _SUFFIX.match(stored, i + 2)
            if match:
                return stored[:i] + stored[match.end() :], int(match.group())
            i += 2
        else:
            i += 2  # a quoted character (or the first of two hex digits)
    return stored, 0


def add_suffix(stored: str, number: int) -> str:
    """``stored`` with the collision suffix ``‛~number`` before its extension."""
    dot = stored.rfind(".")
    cut = dot if dot > 0 else len(stored)
    return f"{stored[:cut]}{SUFFIX_MARK}{number}{stored[cut:]}"


def decode_name(stored: str) -> str:
    """The original of a component made by :func:`encode_name` (and :func:`add_suffix`)."""
    body, _number = _split_suffix(stored)
    last = len(body) - 1
    out: list[str] = []
    i = 0
    while i <= last:
        c = body[i]
        if c == QUOTE and i < last:
            pair = body[i + 1 : i + 3]
            if len(pair) == 2 and set(pair) <= _HEX:
                out.append(chr(0xDC00 + int(pair, 16)))
                i += 3
            else:
                out.append(body[i + 1])
                i += 2
            continue
        if c in _FROM_FULLWIDTH:
            out.append(_FROM_FULLWIDTH[c])
        elif CONTROL_PICTURES <= ord(c) < CONTROL_PICTURES + 32:
            out.append(chr(ord(c) - CONTROL_PICTURES))
        elif i == last and c == TRAILING_SPACE:
            out.append(" ")
        elif i == last and c == TRAILING_DOT:
            out.append(".")
        else:
            out.append(c)
        i += 1
    name = "".join(out)
    if body and _is_fullwidth_letter(body[0]):
        device = _narrow(name[0]) + name[1:]
        if _is_device(device):
            return device
    return name


def encode_path(path: str) -> str:
    """Encode every component of a relative POSIX path (no collision suffixes)."""
    return "/".join(encode_name(part) for part in path.split("/")) if path else path


def decode_path(path: str) -> str:
    """Decode every component of a stored relative POSIX path."""
    return "/".join(decode_name(part) for part in path.split("/")) if path else path


@dataclass
class NameCheck:
    """Outcome of checking every name of a copy plan."""

    problems: list[str] = field(default_factory=list)
    """``path: reason`` for each name that cannot be stored (in map mode: cannot be mapped)."""
    stored: dict[str, str] = field(default_factory=dict)
    """Path → stored path, for every path (and ancestor) whose stored form differs."""


def _levels(paths: Iterable[str]) -> list[list[str]]:
    """Every path and ancestor, grouped by depth; each level in code point order."""
    every: set[str] = set()
    for path in paths:
        parts = path.split("/")
        every.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    every.discard("")
    levels: dict[int, list[str]] = defaultdict(list)
    for path in sorted(every):
        levels[path.count("/")].append(path)
    return [levels[depth] for depth in sorted(levels)]


def check_names(paths: Sequence[str], *, map_names: bool) -> NameCheck:
    """Check (and, with ``map_names``, map) every component of ``paths`` and their folders.

    Each offending name is reported once, where it occurs, not again for every
    file below a bad folder name. Folders are settled before their content, so
    a child's stored path always starts with its folder's final stored path.
    """
    result = NameCheck()
    for level in _levels(paths):
        groups: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for path in level:
            parent, _, name = path.rpartition("/")
            stored_parent = result.stored.get(parent, parent)
            stored = name
            if map_names:
                stored = encode_name(name)
                if _utf16_units(stored) > MAX_UTF16_UNITS:
                    result.problems.append(
                        f"{path}: longer than {MAX_UTF16_UNITS} UTF-16 units once mapped "
                        f"({_utf16_units(stored)})"
                    )
            elif reasons := name_reasons(name):
                result.problems.append(f"{path}: {'; '.join(reasons)}")
            groups[(stored_parent, fold_case(stored))].append((path, stored_parent, stored))
        for group in groups.values():
            if len(group) > 1:
                _settle_collision(group, result, map_names)
            for path, stored_parent, stored in group:
                full = f"{stored_parent}/{stored}" if stored_parent else stored
                if full != path:
                    result.stored[path] = full
    result.problems.sort()
    return result


def _settle_collision(
    group: list[tuple[str, str, str]], result: NameCheck, map_names: bool
) -> None:
    """Names equal but for case in one folder: report them all, or suffix all but the first."""
    names = [path.rpartition("/")[2] for path, _, _ in group]
    if not map_names:
        for path, _, _ in group:
            own = path.rpartition("/")[2]
            others = ", ".join(repr(n) for n in names if n != own)
            result.problems.append(
                f"{path}: same name as {others} but for case (Windows can open only one of them)"
            )
        return
    for index in range(1, len(group)):
        path, stored_parent, stored = group[index]
        renamed = add_suffix(stored, index + 1)
        if _utf16_units(renamed) > MAX_UTF16_UNITS:
            result.problems.append(
                f"{path}: equal to {names[0]!r} but for case, and too long for a suffix"
            )
        group[index] = (path, stored_parent, renamed)
