r"""The files finalcopy keeps in ``DEST/.finalcopy/``, and how they are read back.

``manifest.<algo>``
    One line per file, ``<hex digest>  <path>``, paths relative to DEST, in the
    format the standard checker of the algorithm reads, so anyone can check a
    copy without finalcopy::

        cd DEST && b3sum -c .finalcopy/manifest.blake3
        cd DEST && sha256sum -c .finalcopy/manifest.sha256
        cd DEST && xxh128sum -c .finalcopy/manifest.xxh128

    What each checker reads was taken from its sources (BLAKE3-team/BLAKE3
    ``b3sum/src/main.rs`` 1.0.0–1.8.x, coreutils ``src/digest.c`` /
    ``md5sum.c`` 8.x–9.x, Cyan4973/xxHash ``cli/xxhsum.c`` 0.8.1–0.8.2) and
    tried with b3sum 1.2.0, sha256sum (GNU coreutils) 9.1 and xxh128sum 0.8.1:

    * every checker opens a line's path relative to its working directory, and
      reads ``-`` (b3sum, sha256sum) or ``stdin`` (xxh128sum) as standard input:
      those two names are written ``./-`` and ``./stdin``, which open the file;
    * **b3sum 1.x** takes the rest of the line after two spaces as the path.
      A line starting with ``\`` has ``\\`` and ``\n`` unescaped in its path,
      and any other escape is refused ("Invalid backslash escape": 1.0–1.5
      have no ``\r``). It reads the whole check file as UTF-8 (one invalid byte
      and it stops: "stream did not contain valid UTF-8") and refuses paths
      holding U+FFFD. 1.0–1.5 drop only the line feed; 1.6+ drop every CR and
      LF at the end of a line and add a ``\r`` escape;
    * **sha256sum** (coreutils) unescapes ``\\`` and ``\n`` after a leading
      ``\`` — and ``\r`` since 9.0, which also drops one raw CR at the end of
      a line. Any byte but NUL may be in a path;
    * **xxh128sum** 0.8.1 has no escaping at all (a name with a line feed cannot
      be written; an escaped line is skipped as "improperly formatted", which
      is a warning, not a failure); 0.8.2 unescapes ``\\ \n \r`` after a
      leading ``\``.

    So finalcopy writes, per checker (``algorithm=``):

    ``blake3``
        ``\``, LF: escaped line (``\\``, ``\n``). CR: raw, everywhere — the
        form b3sum 1.0–1.5 read (b3sum 1.2.0 is Debian 12's). Not listed:
        paths that are not UTF-8 or hold U+FFFD (no b3sum 1.x can be given
        them at all).
    ``sha256``
        ``\``, LF: escaped line. CR: raw (any coreutils reads that), except in
        a path ending in CR, where every CR is ``\r`` (coreutils ≥ 9.0, the
        only form 9.x reads). Every path is listed.
    ``xxh128``
        raw (backslashes and CR as they are), except paths holding a LF:
        escaped line (``\\``, ``\n``; read by 0.8.2, skipped by 0.8.1). Every
        path is listed.
    no ``algorithm``
        only the forms b3sum 1.x and sha256sum of any version read alike:
        as ``blake3``, and paths ending in CR are not listed either.

    Paths of more than :data:`CHECKER_PATH_MAX` bytes are never listed (no
    checker can open them in one call). Paths that are not listed are checked
    by ``finalcopy verify`` from ``state.jsonl``, which records every file.

    Limits of the standard tools that no manifest can lift: b3sum 1.x cannot
    check names that are not UTF-8 or hold U+FFFD; b3sum 1.6+ drops a trailing
    CR, so it reports a path ending in CR (listed raw for 1.0–1.5) as missing;
    coreutils 8.x does not know ``\r`` and skips a line for a path ending in CR
    as improperly formatted; xxh128sum 0.8.1 skips names holding a line feed.

``state.jsonl``
    What the engine needs to skip verified files cheaply on a re-run: per
    file, the source size and mtime it was copied from, the destination mtime
    right after commit, and its hash. It is rewritten every few seconds during
    a copy, so a re-run after a crash keeps almost everything already done.

``names.tsv``
    Only when the destination stored some names differently (NTFS
    ``--ntfs-names map``): ``original<TAB>stored`` per renamed path.

All three are untrusted when read back (anyone who can write DEST can write
them): :func:`read_manifest`, :func:`read_state` and :func:`read_names` never
raise, read at most :data:`MAX_FILE_BYTES` and lines of at most
:data:`MAX_LINE_BYTES`, and yield only relative paths without empty, ``.``
or ``..`` components, NUL, or a leading ``/``; every line they skip is
named, with its reason, in ``problems``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

STATE_NAME = "state.jsonl"
NAMES_NAME = "names.tsv"
"""In ``DEST/.finalcopy/``: original → stored path of each name the destination mapped."""

MAX_FILE_BYTES = 1 << 30
"""Largest manifest, state or names file read back (about 5 million files)."""
MAX_LINE_BYTES = 128 * 1024
"""Longest line read back; every line finalcopy writes for a valid path fits."""
MAX_PATH_BYTES = 16 * 1024
"""Longest relative path accepted when reading back."""
CHECKER_PATH_MAX = 4095
"""Longest path a checker can open (``PATH_MAX`` with its NUL): longer ones are not listed."""

T = TypeVar("T")


@dataclass
class Parsed(Generic[T]):
    """What a file read back holds, and why each skipped line was skipped."""

    entries: dict[str, T] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """``"line N: reason: 'text'"`` per skipped line (or one for the whole file)."""


def _show(text: str, limit: int = 80) -> str:
    """``text`` quoted with every control character escaped: safe on any terminal."""
    shown = repr(text[:limit])
    return shown + ("…" if len(text) > limit else "")


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


def _lines(data: bytes, parsed: Parsed[T]) -> Iterator[tuple[int, str]]:
    """Numbered, decoded lines of ``data`` within the bounds; the rest become problems."""
    if len(data) > MAX_FILE_BYTES:
        parsed.problems.append(f"larger than {MAX_FILE_BYTES} bytes: not read")
        return
    for number, raw in enumerate(data.split(b"\n"), 1):
        if len(raw) > MAX_LINE_BYTES:
            parsed.problems.append(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
            continue
        yield number, raw.decode("utf-8", "surrogateescape")


# -- manifests --------------------------------------------------------------------------

_MODES = ("blake3", "sha256", "xxh128")
_STDIN_NAMES = frozenset({"-", "stdin"})
_DIGEST = re.compile(r"[0-9a-fA-F]+")
_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r"}


def _mode(algorithm: str | None) -> str | None:
    if algorithm is None:
        return None
    if algorithm not in _MODES:
        raise ValueError(f"no manifest format for algorithm {algorithm!r}")
    return algorithm


def checker_can_name(path: str, algorithm: str | None) -> bool:
    """Whether the manifest for ``algorithm`` lists ``path`` (see the module docstring).

    ``algorithm=None``: the manifest written without one, which only lists
    what b3sum 1.x and sha256sum of any version read alike.
    """
    if path_problem(path) is not None:
        return False
    if len(path.encode("utf-8", "surrogateescape")) > CHECKER_PATH_MAX:
        return False
    if algorithm in (None, "blake3"):
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return False  # not UTF-8: b3sum reads its check file as UTF-8
        if "\ufffd" in path:
            return False  # b3sum refuses U+FFFD
    return not (algorithm is None and path.endswith("\r"))


def _manifest_line(path: str, digest: str, mode: str | None) -> str:
    name = "./" + path if path in _STDIN_NAMES else path
    if mode == "xxh128":
        escaped_cr = False
        escape = "\n" in name
    else:
        escaped_cr = mode == "sha256" and name.endswith("\r")
        escape = escaped_cr or "\\" in name or "\n" in name
    if not escape:
        return f"{digest}  {name}\n"
    name = name.replace("\\", "\\\\").replace("\n", "\\n")
    if escaped_cr:
        name = name.replace("\r", "\\r")
    return f"\\{digest}  {name}\n"


def format_manifest(digests: Mapping[str, str], *, algorithm: str | None = None) -> bytes:
    """Manifest text for the checker of ``algorithm``, sorted by path.

    Paths that checker cannot be given at all are left out (see
    :func:`checker_can_name`); ``finalcopy verify`` checks them from the state.
    Without ``algorithm``, a manifest both b3sum and sha256sum read.
    """
    mode = _mode(algorithm)
    return "".join(
        _manifest_line(path, digests[path], mode)
        for path in sorted(digests)
        if checker_can_name(path, mode)
    ).encode("utf-8", "surrogateescape")


def _unescape(text: str) -> str | None:
    """``\\\\ \\n \\r`` unescaped; None for any other backslash sequence."""
    out: list[str] = []
    start = 0
    while (i := text.find("\\", start)) >= 0:
        replacement = _UNESCAPE.get(text[i + 1 : i + 2])
        if replacement is None:
            return None
        out += (text[start:i], replacement)
        start = i + 2
    out.append(text[start:])
    return "".join(out)


def _manifest_entry(line: str) -> tuple[str, str] | str:
    """(path, digest) of one manifest line, or why it is malformed."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    match = _DIGEST.match(body)
    if match is None:
        return "no hex digest at the start of the line"
    digest = match.group()
    if len(digest) % 2 or len(digest) > 128:
        return f"a hex digest of {len(digest)} characters"
    separator = body[len(digest) : len(digest) + 2]
    if separator not in ("  ", " *"):
        return "no separator ('  ' or ' *') after the digest"
    name = body[len(digest) + 2 :]
    if escaped:
        unescaped = _unescape(name)
        if unescaped is None:
            return "invalid backslash escape (only \\\\, \\n and \\r are)"
        name = unescaped
    if name.startswith("./"):
        name = name[2:]
    problem = path_problem(name)
    if problem is not None:
        return problem
    return name, digest.lower()


def read_manifest(data: bytes) -> Parsed[str]:
    """Path → digest of a manifest (finalcopy's, or one written by b3sum, sha256sum, xxh128sum).

    The exact inverse of :func:`format_manifest`. Empty lines and ``#``
    comments (as sha256sum reads them) are ignored; malformed lines, paths
    outside the tree and repeated paths (the first is kept) are problems.
    A raw CR stays part of the path.
    """
    parsed: Parsed[str] = Parsed()
    for number, line in _lines(data, parsed):
        if not line or line.startswith("#"):
            continue
        entry = _manifest_entry(line)
        if isinstance(entry, str):
            parsed.problems.append(f"line {number}: {entry}: {_show(line)}")
        elif entry[0] in parsed.entries:
            parsed.problems.append(f"line {number}: {_show(entry[0])} listed twice; first kept")
        else:
            parsed.entries[entry[0]] = entry[1]
    return parsed


def parse_manifest(data: bytes) -> dict[str, str]:
    """Path → digest; malformed lines are skipped (:func:`read_manifest` says why)."""
    return read_manifest(data).entries


# -- state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateRecord:
    """Why a destination file can be trusted without re-reading it."""

    path: str
    size: int
    source_mtime_ns: int
    dest_mtime_ns: int
    algorithm: str
    digest: str


_STATE_FIELDS = frozenset(StateRecord.__dataclass_fields__)
_INT_FIELDS = ("size", "source_mtime_ns", "dest_mtime_ns")
_HEX = re.compile(r"(?:[0-9a-f]{2}){1,64}")


def _is_algorithm_name(text: str) -> bool:
    return 0 < len(text) <= 16 and text.isascii() and text.isalnum() and text == text.lower()


def format_state(records: Iterable[StateRecord]) -> bytes:
    # Formatted by hand: json.dumps of a whole dict per file was a visible
    # share of a 10,000-file copy; only the strings need JSON's escaping.
    text = json.encoder.encode_basestring
    lines = [
        f'{{"path": {text(r.path)}, "size": {r.size}, "source_mtime_ns": {r.source_mtime_ns}, '
        f'"dest_mtime_ns": {r.dest_mtime_ns}, "algorithm": {text(r.algorithm)}, '
        f'"digest": {text(r.digest)}}}\n'
        for r in records
    ]
    return "".join(lines).encode("utf-8", "surrogateescape")


def _state_record(value: object) -> StateRecord | str:
    """The record a decoded JSON line holds, or why it holds none."""
    if not isinstance(value, dict):
        return "not a JSON object"
    if value.keys() != _STATE_FIELDS:
        return f"fields are not exactly {', '.join(sorted(_STATE_FIELDS))}"
    path = value["path"]
    if not isinstance(path, str):
        return "path is not a string"
    problem = path_problem(path)
    if problem is not None:
        return problem
    for name in _INT_FIELDS:
        number = value[name]
        if type(number) is not int or not -(1 << 63) <= number < 1 << 63:
            return f"{name} is not a 64-bit integer"
    if value["size"] < 0:
        return "negative size"
    algorithm, digest = value["algorithm"], value["digest"]
    if not isinstance(algorithm, str) or not _is_algorithm_name(algorithm):
        return "algorithm is not a short lowercase name"
    if not isinstance(digest, str) or not _HEX.fullmatch(digest):
        return "digest is not lowercase hex"
    return StateRecord(
        path, value["size"], value["source_mtime_ns"], value["dest_mtime_ns"], algorithm, digest
    )


def read_state(data: bytes) -> Parsed[StateRecord]:
    """Latest valid record per path; anything else (a torn last line too) is a problem."""
    parsed: Parsed[StateRecord] = Parsed()
    for number, line in _lines(data, parsed):
        if not line:
            continue
        try:
            record = _state_record(json.loads(line))
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested too deep
            record = "not JSON"
        if isinstance(record, str):
            parsed.problems.append(f"line {number}: {record}: {_show(line)}")
        else:
            parsed.entries[record.path] = record
    return parsed


def parse_state(data: bytes) -> dict[str, StateRecord]:
    """Latest record per path; invalid lines are skipped (:func:`read_state` says why)."""
    return read_state(data).entries


# -- names --------------------------------------------------------------------------------

_NAMES_HEADER = "original\tstored"
_NAMES_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_NAMES_UNESCAPE = {v[1]: k for k, v in _NAMES_ESCAPES.items()}
_NAMES_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


def format_names(renamed: Mapping[str, str]) -> bytes:
    """``original<TAB>stored`` lines under a header, sorted; ``\\ \\t \\n \\r`` escaped."""
    table = str.maketrans(_NAMES_ESCAPES)
    lines = [f"{o.translate(table)}\t{s.translate(table)}\n" for o, s in sorted(renamed.items())]
    return (_NAMES_HEADER + "\n" + "".join(lines)).encode("utf-8", "surrogateescape")


def _names_field(text: str) -> str | None:
    bad = False

    def replace(match: re.Match[str]) -> str:
        nonlocal bad
        char = _NAMES_UNESCAPE.get(match.group(1))
        if char is None:
            bad = True
            return ""
        return char

    out = _NAMES_ESCAPE_RE.sub(replace, text)
    return None if bad else out


def read_names(data: bytes) -> Parsed[str]:
    """Original → stored path, read back from :func:`format_names`."""
    parsed: Parsed[str] = Parsed()
    header = (_NAMES_HEADER + "\n").encode()
    if len(data) <= MAX_FILE_BYTES and not data.startswith(header):
        first = data[: len(header)].decode("utf-8", "surrogateescape")
        parsed.problems.append(f"line 1: no 'original<TAB>stored' header: {_show(first)}")
        return parsed
    for number, line in _lines(data, parsed):
        if number == 1 or not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            parsed.problems.append(f"line {number}: not two tab-separated paths: {_show(line)}")
            continue
        original, stored = (_names_field(f) for f in fields)
        if original is None or stored is None:
            parsed.problems.append(f"line {number}: invalid backslash escape: {_show(line)}")
            continue
        problem = path_problem(original) or path_problem(stored)
        if problem is not None:
            parsed.problems.append(f"line {number}: {problem}: {_show(line)}")
            continue
        parsed.entries[original] = stored
    return parsed


def parse_names(data: bytes) -> dict[str, str]:
    """Original → stored path; invalid lines are skipped (:func:`read_names` says why)."""
    return read_names(data).entries
