"""finalcopy's own files beside the manifest in ``DEST/.finalcopy/``: the state and the names.

``state.jsonl``
    What the engine needs to skip verified files cheaply on a re-run: per
    file, the source size and mtime it was copied from, the destination mtime
    right after commit, and its hash. It is rewritten every few seconds during
    a copy, so a re-run after a crash keeps almost everything already done.
    Every file is recorded, also those the manifest cannot list.

``names.tsv``
    Only when the destination stored some names differently (NTFS
    ``--ntfs-names map``): ``original<TAB>stored`` per renamed path.

Both are untrusted when read back (:mod:`.untrusted`): :func:`read_state` and
:func:`read_names` never raise and name every line they skip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from finalcopy.engine.untrusted import (
    MAX_FILE_BYTES,
    Parsed,
    numbered_lines,
    path_problem,
    shown,
    unescape,
)

STATE_NAME = "state.jsonl"
NAMES_NAME = "names.tsv"
"""In ``DEST/.finalcopy/``: original → stored path of each name the destination mapped."""


@dataclass(frozen=True, slots=True)
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


def state_lines(records: Iterable[StateRecord]) -> Iterator[str]:
    """One JSON line per record, to be encoded ``utf-8`` with ``surrogateescape``."""
    # Formatted by hand: json.dumps of a whole dict per file was a visible
    # share of a 10,000-file copy. Only the path needs JSON's escaping: an
    # algorithm's name is escaped once, and a digest is hex (a record's is
    # always its source's, or a state line's checked by _HEX).
    text = json.encoder.encode_basestring
    names: dict[str, str] = {}
    for r in records:
        algorithm = names.get(r.algorithm) or names.setdefault(r.algorithm, text(r.algorithm))
        yield (
            f'{{"path": {text(r.path)}, "size": {r.size}, "source_mtime_ns": {r.source_mtime_ns}, '
            f'"dest_mtime_ns": {r.dest_mtime_ns}, "algorithm": {algorithm}, '
            f'"digest": "{r.digest}"}}\n'
        )


def format_state(records: Iterable[StateRecord]) -> bytes:
    """The whole state file of :func:`state_lines`, encoded."""
    return "".join(state_lines(records)).encode("utf-8", "surrogateescape")


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
    for number, line in numbered_lines(data, parsed):
        if not line:
            continue
        try:
            record = _state_record(json.loads(line))
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested too deep
            record = "not JSON"
        if isinstance(record, str):
            parsed.problems.append(f"line {number}: {record}: {shown(line)}")
        else:
            parsed.entries[record.path] = record
    return parsed


def parse_state(data: bytes) -> dict[str, StateRecord]:
    """Latest record per path; invalid lines are skipped (:func:`read_state` says why)."""
    return read_state(data).entries


# -- names.tsv ----------------------------------------------------------------------------

_NAMES_HEADER = "original\tstored"
_NAMES_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_NAMES_UNESCAPE = {v[1]: k for k, v in _NAMES_ESCAPES.items()}


def names_lines(renamed: Mapping[str, str]) -> Iterator[str]:
    """``original<TAB>stored`` lines under a header, sorted; ``\\ \\t \\n \\r`` escaped."""
    table = str.maketrans(_NAMES_ESCAPES)
    yield _NAMES_HEADER + "\n"
    for original, stored in sorted(renamed.items()):
        yield f"{original.translate(table)}\t{stored.translate(table)}\n"


def format_names(renamed: Mapping[str, str]) -> bytes:
    """The whole ``names.tsv`` of :func:`names_lines`, encoded."""
    return "".join(names_lines(renamed)).encode("utf-8", "surrogateescape")


def read_names(data: bytes) -> Parsed[str]:
    """Original → stored path, read back from :func:`format_names`."""
    parsed: Parsed[str] = Parsed()
    header = (_NAMES_HEADER + "\n").encode()
    if len(data) <= MAX_FILE_BYTES and not data.startswith(header):
        first = data[: len(header)].decode("utf-8", "surrogateescape")
        parsed.problems.append(f"line 1: no 'original<TAB>stored' header: {shown(first)}")
        return parsed
    for number, line in numbered_lines(data, parsed):
        if number == 1 or not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            parsed.problems.append(f"line {number}: not two tab-separated paths: {shown(line)}")
            continue
        original, stored = (unescape(f, _NAMES_UNESCAPE) for f in fields)
        if original is None or stored is None:
            parsed.problems.append(f"line {number}: invalid backslash escape: {shown(line)}")
            continue
        problem = path_problem(original) or path_problem(stored)
        if problem is not None:
            parsed.problems.append(f"line {number}: {problem}: {shown(line)}")
            continue
        parsed.entries[original] = stored
    return parsed


def parse_names(data: bytes) -> dict[str, str]:
    """Original → stored path; invalid lines are skipped (:func:`read_names` says why)."""
    return read_names(data).entries
