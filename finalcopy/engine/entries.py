"""The destination entries around the streamed files: what is moved aside, linked, sealed.

Before the transfer, with ``backup_dir``, every entry the copy will replace
is moved aside (:func:`move_aside`), so that the pipeline's rollback can put
it back. After it, symbolic links are recreated (never followed,
:func:`link_tree`) and folders get their metadata once their content is
complete, then are made durable (:func:`seal_tree`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from finalcopy.backends.base import join
from finalcopy.engine.layout import Layout
from finalcopy.engine.options import CopyReport, Reporter
from finalcopy.engine.plan import META_DIR, PlannedFile
from finalcopy.errors import FinalcopyError


async def move_aside(
    layout: Layout, files: Sequence[PlannedFile], backup_dir: str, report: CopyReport
) -> None:
    """Move what ``files`` and the plan's links will replace into ``backup_dir``.

    Each move is recorded in ``report.replaced`` as it is made. An entry
    already in ``backup_dir`` is never overwritten: an interrupted attempt
    moved the original there, and the final name holds that attempt's copy.
    """
    backend = layout.backend
    rels = [f.path for f in files] + [link.path for link in layout.plan.links]
    stats = await backend.stat([layout.path(rel) for rel in rels])
    present = [rel for rel, st in zip(rels, stats, strict=True) if st and st.kind != "dir"]
    if not present:
        return
    folder = layout.path(backup_dir)
    aside = {layout.path(rel): join(folder, layout.stored(rel)) for rel in present}
    kept = await backend.stat(list(aside.values()))
    await backend.makedirs(sorted({posixpath.dirname(b) for b in aside.values()}))
    for (path, backup), st in zip(aside.items(), kept, strict=True):
        if st is None:
            await backend.rename(path, backup)
        report.replaced[path] = backup


async def link_tree(layout: Layout, say: Reporter, *, keep_written: bool) -> None:
    """Symlinks, recreated as links (never followed); a link that fails is that path's failure.

    With ``keep_written``, each link made is added to the report's ``written``.
    """
    backend = layout.backend
    for link in layout.plan.links:
        if not backend.capabilities.symlinks:
            say.warn(f"symlink not created (unsupported by destination): {link.path}")
            continue
        try:
            await backend.symlink(layout.path(link.path), link.target)
            if keep_written:
                say.report.written.append(layout.path(link.path))
        except FinalcopyError as exc:
            say.fail(link.path, str(exc))


async def seal_tree(layout: Layout) -> None:
    """Folder metadata, once their content is complete, then durability.

    Folders are sealed in no order (several at a time over SFTP, all in one
    worker-thread hop on a local disk): a folder's mtime moves when entries
    are added to it, renamed or removed, never when a subfolder's own
    metadata is set. Every folder is tried; the first error is raised after.
    """
    backend, dirs = layout.backend, layout.plan.dirs
    if backend.capabilities.posix_metadata:
        # Kept writable by their owner, so that a re-run can complete them.
        sealed = [(layout.path(d.path), d.mode | 0o700, d.mtime_ns) for d in dirs]
        await backend.seal_folders(sealed)
    await backend.sync_dirs([layout.path(d.path) for d in dirs] + [layout.path(META_DIR)])
