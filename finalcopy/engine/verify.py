"""Re-check a finished copy against its manifest, long after the copy ran.

Everything read from ``DEST/.finalcopy/`` is untrusted: the files must be
regular files of at most :data:`~finalcopy.engine.untrusted.MAX_FILE_BYTES`,
a malformed manifest line is reported as an error (never followed), and only
paths inside DEST are ever hashed: those the walk of DEST found.

The manifest leaves out the paths its standard checker cannot be given at all
(for ``b3sum``: names that are not UTF-8 or hold U+FFFD; see
:mod:`finalcopy.engine.manifest`). Such a file is checked against its record in
``state.jsonl`` (mapped through ``names.tsv``), which the copy writes beside the
manifest, and listed in :attr:`VerifyReport.unlisted`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import anyio

from finalcopy.backends.base import Backend, is_temp_name, join
from finalcopy.engine.events import BytesProgress, EventSink, FileFailed, FileFinished, discard
from finalcopy.engine.manifest import checker_can_name, read_manifest
from finalcopy.engine.options import record
from finalcopy.engine.plan import META_DIR
from finalcopy.engine.state import NAMES_NAME, STATE_NAME, read_names, read_state
from finalcopy.engine.untrusted import MAX_FILE_BYTES, Parsed
from finalcopy.errors import FinalcopyError, VerificationError
from finalcopy.hashing import ALGORITHMS, Algorithm


@dataclass
class VerifyReport:
    """Differences between a destination and its manifest."""

    destination: str
    algorithm: str = ""
    checked: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    """Temporary files of an interrupted copy."""
    unlisted: list[str] = field(default_factory=list)
    """Files the manifest's checker cannot be given, checked against ``state.jsonl``."""
    errors: dict[str, str] = field(default_factory=dict)
    """Per path (or per malformed line of the manifest): what went wrong."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unexpected or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return record(
            self,
            "destination algorithm ok checked bytes missing changed unexpected leftovers "
            "unlisted errors",
        )


async def _read_meta(backend: Backend, path: str) -> bytes | None:
    """A file of ``.finalcopy/`` if it is there: regular, and not too large to read."""
    (st,) = await backend.stat([path])
    if st is None:
        return None
    if st.kind != "file":
        raise VerificationError(f"'{backend.describe(path)}' is not a regular file ({st.kind})")
    if st.size > MAX_FILE_BYTES:
        raise VerificationError(
            f"'{backend.describe(path)}' is larger than {MAX_FILE_BYTES} bytes: not read"
        )
    return await backend.read_bytes(path)


async def load_manifest(backend: Backend, dest: str) -> tuple[Algorithm, str, Parsed[str]]:
    """The manifest at ``dest`` (blake3 first, then sha256, xxh128): algorithm, name, content."""
    for algorithm in ALGORITHMS.values():
        name = join(META_DIR, algorithm.manifest_name)
        data = await _read_meta(backend, join(dest, name))
        if data is not None:
            return algorithm, name, read_manifest(data)
    raise VerificationError(
        f"no manifest in '{backend.describe(join(dest, META_DIR))}' "
        "(was this folder written by finalcopy copy?)"
    )


async def find_manifest(backend: Backend, dest: str) -> tuple[Algorithm, dict[str, str]]:
    """The manifest at ``dest`` (blake3 first, then sha256, xxh128); malformed lines skipped."""
    algorithm, _name, parsed = await load_manifest(backend, dest)
    return algorithm, parsed.entries


async def unlisted_digests(
    backend: Backend, dest: str, algorithm: Algorithm, listed: Collection[str]
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """From ``state.jsonl``: digests of the files a manifest may leave out; and errors.

    Only paths that even the strictest manifest leaves out (:func:`checker_can_name`
    is false without an algorithm) and ``listed`` does not hold are taken: for
    any other path the manifest is the one authority. None when there is no
    state; the errors (per file of ``.finalcopy/``) say why it could not be read.
    """
    state_path, names_path = join(META_DIR, STATE_NAME), join(META_DIR, NAMES_NAME)
    try:
        state = await _read_meta(backend, join(dest, state_path))
        if state is None:
            return None, {}
        names = await _read_meta(backend, join(dest, names_path))
    except VerificationError as exc:
        return None, {META_DIR: str(exc)}
    renamed = read_names(names).entries if names is not None else {}
    found: dict[str, str] = {}
    for path, entry in read_state(state).entries.items():
        stored = renamed.get(path, path)
        if (
            stored not in listed
            and entry.algorithm == algorithm.name
            and not checker_can_name(stored, None)
        ):
            found[stored] = entry.digest
    return found, {}


async def verify_tree(
    backend: Backend, dest: str = "", *, jobs: int = 4, events: EventSink = discard
) -> VerifyReport:
    """Re-hash every file the manifest lists; report missing, changed and unexpected files."""
    algorithm, name, parsed = await load_manifest(backend, dest)
    expected = dict(parsed.entries)
    report = VerifyReport(destination=backend.describe(dest), algorithm=algorithm.name)
    for problem in parsed.problems:
        where, _, what = problem.partition(": ")
        report.errors[f"{name} {where}"] = what
    present: dict[str, int] = {}
    for path, st in await backend.walk(dest):
        rel = path[len(dest) :].lstrip("/") if dest else path
        if rel == META_DIR or rel.startswith(META_DIR + "/"):
            continue
        if st.kind == "file" and is_temp_name(rel.rsplit("/", 1)[-1]):
            report.leftovers.append(rel)
        elif st.kind in ("file", "other"):
            present[rel] = st.size
    unlisted, problems = await unlisted_digests(backend, dest, algorithm, expected)
    report.errors.update(problems)
    if unlisted is None and any(
        p not in expected and not checker_can_name(p, None) for p in present
    ):
        report.errors[join(META_DIR, STATE_NAME)] = (
            "missing: the files the manifest cannot list are not checked"
        )
    expected.update(unlisted or {})
    report.unlisted = sorted(unlisted or {})
    report.missing = sorted(p for p in expected if p not in present)
    report.unexpected = sorted(p for p in present if p not in expected)
    to_check = sorted(p for p in expected if p in present)
    total = sum(present[p] for p in to_check)
    limiter = anyio.CapacityLimiter(jobs)

    async def check(path: str) -> None:
        async with limiter:
            try:
                actual = await backend.hash_file(join(dest, path), algorithm)
            except FinalcopyError as exc:
                report.errors[path] = str(exc)
                events(FileFailed(path=path, error=str(exc)))
                return
        report.checked += 1
        report.bytes += present[path]
        if actual != expected[path]:
            report.changed.append(path)
            events(FileFailed(path=path, error="content differs from the manifest"))
        else:
            events(FileFinished(path=path, size=present[path], digest=actual))
        events(BytesProgress(done=report.bytes, total=total))

    async with anyio.create_task_group() as tg:
        for path in to_check:
            tg.start_soon(check, path)
    report.changed.sort()
    return report
