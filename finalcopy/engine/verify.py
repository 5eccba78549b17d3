"""Re-check a finished copy against its manifest, long after the copy ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from finalcopy.backends.base import Backend, is_temp_name, join
from finalcopy.engine.events import BytesProgress, EventSink, FileFailed, FileFinished, discard
from finalcopy.engine.manifest import parse_manifest
from finalcopy.engine.plan import META_DIR
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
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unexpected or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "algorithm": self.algorithm,
            "ok": self.ok,
            "checked": self.checked,
            "bytes": self.bytes,
            "missing": self.missing,
            "changed": self.changed,
            "unexpected": self.unexpected,
            "leftovers": self.leftovers,
            "errors": self.errors,
        }


async def find_manifest(backend: Backend, dest: str) -> tuple[Algorithm, dict[str, str]]:
    """The manifest at ``dest`` (blake3 first, then sha256, xxh128)."""
    for algorithm in ALGORITHMS.values():
        data = await backend.read_bytes(join(dest, META_DIR, algorithm.manifest_name))
        if data is not None:
            return algorithm, parse_manifest(data)
    raise VerificationError(
        f"no manifest in '{backend.describe(join(dest, META_DIR))}' "
        "(was this folder written by finalcopy copy?)"
    )


async def verify_tree(
    backend: Backend, dest: str = "", *, jobs: int = 4, events: EventSink = discard
) -> VerifyReport:
    """Re-hash every file the manifest lists; report missing, changed and unexpected files."""
    algorithm, expected = await find_manifest(backend, dest)
    report = VerifyReport(destination=backend.describe(dest), algorithm=algorithm.name)
    present: dict[str, int] = {}
    for path, st in await backend.walk(dest):
        rel = path[len(dest) :].lstrip("/") if dest else path
        if rel == META_DIR or rel.startswith(META_DIR + "/"):
            continue
        if st.kind == "file" and is_temp_name(rel.rsplit("/", 1)[-1]):
            report.leftovers.append(rel)
        elif st.kind in ("file", "other"):
            present[rel] = st.size
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
