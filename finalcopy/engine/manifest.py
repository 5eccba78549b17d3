"""The files finalcopy keeps in ``DEST/.finalcopy/``.

``manifest.<algo>``
    One line per file in the format of ``b3sum`` / ``sha256sum`` /
    ``xxh128sum``, paths relative to DEST, so anyone can check a copy with
    ``cd DEST && b3sum -c .finalcopy/manifest.blake3``. Names holding a
    backslash, a newline or a carriage return are escaped the way those tools
    do it: the line starts with ``\\`` and the name has ``\\\\``, ``\\n``, ``\\r``
    (for ``xxh128sum``, which does not escape, only names with line breaks).

``state.jsonl``
    What the engine needs to skip verified files cheaply on a re-run: per
    file, the source size and mtime it was copied from, the destination mtime
    right after commit, and its hash. It is rewritten every few seconds during
    a copy, so a re-run after a crash keeps almost everything already done.

``names.tsv``
    Only when the destination stored some names differently (NTFS
    ``--ntfs-names map``): ``original<TAB>stored`` per renamed path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from finalcopy.errors import VerificationError

STATE_NAME = "state.jsonl"


def _escape(path: str, backslash: bool) -> tuple[str, bool]:
    if not any(c in path for c in ("\\\n\r" if backslash else "\n\r")):
        return path, False
    escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return escaped, True


def _unescape(path: str) -> str:
    out: list[str] = []
    chars = iter(path)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, "")
        out.append({"\\": "\\", "n": "\n", "r": "\r"}.get(nxt, "\\" + nxt))
    return "".join(out)


def format_manifest(digests: Mapping[str, str], *, escape_backslash: bool = True) -> bytes:
    """Manifest text, sorted by path so two copies of one tree give equal manifests.

    ``escape_backslash=False`` suits ``xxh128sum`` 0.8, which reads backslashes
    literally and knows no escaping: names with a newline are still escaped
    (it reports those lines as improperly formatted; ``finalcopy verify`` checks them).
    """
    lines: list[str] = []
    for path in sorted(digests):
        name, escaped = _escape(path, escape_backslash)
        prefix = "\\" if escaped else ""
        lines.append(f"{prefix}{digests[path]}  {name}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def parse_manifest(data: bytes) -> dict[str, str]:
    """Read a manifest written by :func:`format_manifest` or by ``b3sum``/``sha256sum``."""
    digests: dict[str, str] = {}
    for number, raw in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), 1):
        if not raw:
            continue
        escaped = raw.startswith("\\")
        line = raw[1:] if escaped else raw
        digest, sep, name = line.partition("  ")
        if not sep:
            digest, sep, name = line.partition(" *")  # binary-mode marker of GNU tools
        if not sep or not digest:
            raise VerificationError(f"manifest line {number} is malformed: {raw[:80]!r}")
        digests[_unescape(name) if escaped else name] = digest
    return digests


@dataclass(frozen=True)
class StateRecord:
    """Why a destination file can be trusted without re-reading it."""

    path: str
    size: int
    source_mtime_ns: int
    dest_mtime_ns: int
    algorithm: str
    digest: str


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


def parse_state(data: bytes) -> dict[str, StateRecord]:
    """Latest record per path; a torn last line (crash mid-append) is ignored."""
    records: dict[str, StateRecord] = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        try:
            record = StateRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue
        records[record.path] = record
    return records


NAMES_NAME = "names.tsv"
"""In ``DEST/.finalcopy/``: original → stored path of each name the destination mapped."""
_NAMES_HEADER = "original\tstored\n"
_NAMES_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def format_names(renamed: Mapping[str, str]) -> bytes:
    """``original<TAB>stored`` lines under a header, sorted; ``\\ \\t \\n \\r`` escaped."""
    table = str.maketrans(_NAMES_ESCAPES)
    lines = [f"{o.translate(table)}\t{s.translate(table)}\n" for o, s in sorted(renamed.items())]
    return (_NAMES_HEADER + "".join(lines)).encode("utf-8", "surrogateescape")


def parse_names(data: bytes) -> dict[str, str]:
    """Original → stored path, read back from :func:`format_names`."""
    unescape = {v: k for k, v in _NAMES_ESCAPES.items()}

    def field(text: str) -> str:
        return re.sub(r"\\.", lambda m: unescape.get(m.group(), m.group()), text)

    out: dict[str, str] = {}
    for line in data.decode("utf-8", "surrogateescape").split("\n")[1:]:
        original, sep, stored = line.partition("\t")
        if sep:
            out[field(original)] = field(stored)
    return out
