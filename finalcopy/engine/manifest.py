r"""The manifest, ``DEST/.finalcopy/manifest.<algo>``: written for the standard checkers, read back.

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

Read back, a manifest is untrusted (:mod:`.untrusted`): :func:`read_manifest`
never raises and names every line it skips. ``state.jsonl`` and ``names.tsv``,
finalcopy's own files beside it, are in :mod:`.state`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import get_args

from finalcopy.choices import AlgorithmName
from finalcopy.engine.untrusted import Parsed, numbered_lines, path_problem, shown, unescape

CHECKER_PATH_MAX = 4095
"""Longest path a checker can open (``PATH_MAX`` with its NUL): longer ones are not listed."""

_MODES: tuple[str, ...] = get_args(AlgorithmName)  # one manifest format per algorithm
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
    if path.isascii():  # most paths: one byte a character, UTF-8 without U+FFFD (no encoding)
        return len(path) <= CHECKER_PATH_MAX and not (algorithm is None and path.endswith("\r"))
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


def manifest_lines(digests: Mapping[str, str], *, algorithm: str | None = None) -> Iterator[str]:
    """The lines of the manifest for the checker of ``algorithm``, sorted by path.

    Paths that checker cannot be given at all are left out (see
    :func:`checker_can_name`); ``finalcopy verify`` checks them from the state.
    Without ``algorithm``, a manifest both b3sum and sha256sum read. Encoded
    ``utf-8`` with ``surrogateescape``, as :func:`format_manifest` does.
    """
    mode = _mode(algorithm)
    for path in sorted(digests):
        if checker_can_name(path, mode):
            yield _manifest_line(path, digests[path], mode)


def format_manifest(digests: Mapping[str, str], *, algorithm: str | None = None) -> bytes:
    """The whole manifest of :func:`manifest_lines`, encoded."""
    return "".join(manifest_lines(digests, algorithm=algorithm)).encode("utf-8", "surrogateescape")


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
        unescaped = unescape(name, _UNESCAPE)
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
    for number, line in numbered_lines(data, parsed):
        if not line or line.startswith("#"):
            continue
        entry = _manifest_entry(line)
        if isinstance(entry, str):
            parsed.problems.append(f"line {number}: {entry}: {shown(line)}")
        elif entry[0] in parsed.entries:
            parsed.problems.append(f"line {number}: {shown(entry[0])} listed twice; first kept")
        else:
            parsed.entries[entry[0]] = entry[1]
    return parsed


def parse_manifest(data: bytes) -> dict[str, str]:
    """Path → digest; malformed lines are skipped (:func:`read_manifest` says why)."""
    return read_manifest(data).entries
