"""Keep a verified copy of each project's analysis artifacts in ``ARCHIVES_DIR``, forever.

Layout: ``ARCHIVES_DIR/<project>/<path inside the project>``, with the
engine's manifest in ``ARCHIVES_DIR/<project>/.finalcopy/`` (check it with
``b3sum -c``). Archiving is idempotent: an artifact already archived with
the same content is skipped. Nothing under ``ARCHIVES_DIR`` is ever deleted
or overwritten: when an artifact was archived before with *different*
content, this run's artifacts go to ``ARCHIVES_DIR/<project>__archived_YYYYmmdd_HHMMSS[_n]/``
and the earlier archive stays as it was.

The engine copies folders, so the artifacts are first gathered in a staging
folder of hard links (``WORK/.finalcopy/stage/``; a plain copy when links are
impossible) that keeps their names, sizes and mtimes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import anyio.to_thread

from finalcopy.backends import Backend
from finalcopy.backends.base import is_temp_name, join
from finalcopy.engine import META_DIR, CopyOptions, CopyReport, EventSink, copy_tree
from finalcopy.engine.ledger import store_lines
from finalcopy.engine.manifest import manifest_lines, parse_manifest
from finalcopy.engine.state import STATE_NAME, parse_state, state_lines
from finalcopy.errors import FinalcopyError, Interrupted
from finalcopy.finalize.destination import free_name
from finalcopy.finalize.metadir import check_private_dir
from finalcopy.finalize.rollback import REPLACED_DIR
from finalcopy.hashing import Algorithm, hash_path


def stage(sources: Iterable[tuple[Path, str]], folder: Path) -> None:
    """Gather ``(file, relative path)`` pairs under ``folder`` as hard links (else copies)."""
    if folder.exists():
        shutil.rmtree(folder)
    for source, rel in sources:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, target, follow_symlinks=False)


def unstage(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)


@dataclass
class ArchiveStep:
    """Archive (and restore) projects' artifacts; the events of each call go to its own sink."""

    backend: Backend
    stage_root: Path
    options: CopyOptions
    algorithm: Algorithm
    cancel: threading.Event

    def _staging(self, name: str) -> Path:
        """``WORK/.finalcopy/stage/<name>``, its folders checked to be real ones (no links)."""
        meta = self.stage_root.parent
        return check_private_dir(meta.parent, meta.name, self.stage_root.name) / name

    async def _conflicts(self, project: Path, name: str, artifacts: list[str]) -> list[str] | None:
        """Artifacts already archived under ``name`` with other content.

        None when there are none but some equal ones had to be hashed to know
        it: the engine must then compare by content too, not rewrite them.
        """
        data = await self.backend.read_bytes(join(name, META_DIR, STATE_NAME))
        records = parse_state(data) if data else {}
        stats = await self.backend.stat([join(name, rel) for rel in artifacts])
        out: list[str] = []
        hashed = False
        for rel, st in zip(artifacts, stats, strict=True):
            if st is None:
                continue
            local = (project / rel).stat()
            record = records.get(rel)
            if (
                record is not None
                and record.size == local.st_size == st.size
                and record.source_mtime_ns == local.st_mtime_ns
                and record.dest_mtime_ns == st.mtime_ns
            ):
                continue
            if st.size != local.st_size:
                out.append(rel)
                continue
            hashed = True
            mine = await anyio.to_thread.run_sync(hash_path, project / rel, self.algorithm)
            if mine != await self.backend.hash_file(join(name, rel), self.algorithm):
                out.append(rel)
        return None if hashed and not out else out

    async def archive(
        self, project: Path, name: str, artifacts: list[str], events: EventSink
    ) -> tuple[str, str]:
        """Archive ``artifacts``; returns (folder used, a warning or "")."""
        if not artifacts:
            return "", ""
        target, warning, options = name, "", self.options
        conflicts = await self._conflicts(project, name, artifacts)
        if conflicts is None:
            options = replace(options, checksum=True)
        elif conflicts:
            target = await free_name(self.backend, name, "archived")
            warning = (
                f"{len(conflicts)} artifact(s) differ from those archived earlier in "
                f"'{self.backend.describe(name)}' (e.g. {conflicts[0]}); the earlier archive is "
                f"kept and this one goes to '{self.backend.describe(target)}'"
            )
        folder = self._staging(f"{name}.archive")
        await anyio.to_thread.run_sync(stage, [(project / rel, rel) for rel in artifacts], folder)
        try:
            report = await copy_tree(
                folder,
                self.backend,
                options,
                dest=target,
                events=events,
                cancel=self.cancel,
            )
        finally:
            await anyio.to_thread.run_sync(unstage, folder)
        _raise_for(report, "archiving")
        return self.backend.describe(target), warning

    async def restore(
        self, name: str, present: set[str], output: Backend, target: str, events: EventSink
    ) -> tuple[list[str], CopyReport | None]:
        """Copy archived artifacts that the project lacks into ``output/target``.

        The engine rewrites the destination's manifest and state for the files
        it copies, so both are merged back afterwards: the manifest keeps
        listing every file of the project.
        """
        archived = [
            path[len(name) + 1 :]
            for path, st in await self.backend.walk(name)
            if st.kind == "file"
            and not path[len(name) + 1 :].startswith(META_DIR + "/")
            and not is_temp_name(path.rsplit("/", 1)[-1])
        ]
        missing = sorted(rel for rel in archived if rel not in present)
        if not missing:
            return [], None
        manifest_path = join(target, META_DIR, self.algorithm.manifest_name)
        state_path = join(target, META_DIR, STATE_NAME)
        old_manifest = await output.read_bytes(manifest_path) or b""
        old_state = await output.read_bytes(state_path) or b""
        root = Path(self.backend.root, name)
        folder = self._staging(f"{name}.restore")
        await anyio.to_thread.run_sync(stage, [(root / rel, rel) for rel in missing], folder)
        try:
            # Into the project's copy, whose lock the run holds; a file there is kept
            # aside like the copy's own (see finalize.rollback.Rollback).
            options = replace(self.options, lock=False, backup_dir=REPLACED_DIR, keep_proofs=True)
            report = await copy_tree(
                folder, output, options, dest=target, events=events, cancel=self.cancel
            )
        finally:
            await anyio.to_thread.run_sync(unstage, folder)
            new_manifest = await output.read_bytes(manifest_path) or b""
            new_state = await output.read_bytes(state_path) or b""
            digests = {**parse_manifest(old_manifest), **parse_manifest(new_manifest)}
            records = {**parse_state(old_state), **parse_state(new_state)}
            name = self.algorithm.name
            await store_lines(
                output, manifest_path, lambda: manifest_lines(digests, algorithm=name)
            )
            await store_lines(output, state_path, lambda: state_lines(records.values()))
        _raise_for(report, "restoring archived artifacts")
        return [rel for rel in missing if rel in report.digests], report


def _raise_for(report: CopyReport, what: str) -> None:
    if report.interrupted:
        raise Interrupted(f"interrupted while {what}")
    if not report.ok:
        path, error = next(iter(report.failed.items()))
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        raise FinalcopyError(f"{what} failed: {path}: {error}{more}")
