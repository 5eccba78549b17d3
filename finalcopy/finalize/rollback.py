"""Putting a destination folder back as it was when a project's finalization fails.

The rule: a rollback removes only what this run wrote and puts back what
this run moved aside; it never removes a file that was there before — not
another run's, not one a crashed earlier attempt left (that one's source is
still in the work directory; it is just an extra file until a run
finalizes it). Destination entries the copy replaces wait in
:data:`REPLACED_DIR` until the project commits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from finalcopy.backends import Backend
from finalcopy.backends.base import join
from finalcopy.backends.removal import remove_tree
from finalcopy.engine import META_DIR
from finalcopy.errors import FinalcopyError

REPLACED_DIR = f"{META_DIR}/replaced"
"""Below a target: destination entries this run replaced, kept until the project commits."""


@dataclass
class Rollback:
    """Put a destination folder back as it was before this run wrote into it.

    Taken before the copy (:meth:`snapshot`): which folders existed, and which
    of finalcopy's own files (manifest, state…) existed — those are copied into
    :data:`REPLACED_DIR` first, since the engine rewrites them. During the
    copy the engine moves every entry it replaces into :data:`REPLACED_DIR`
    too (``CopyOptions.backup_dir``). :meth:`undo` then removes the files this
    run wrote (``written``), moves every kept entry back to its name, and
    removes the folders this run created if they are empty. Nothing this run
    did not write is ever removed, so a rollback cannot take another run's
    files, nor a file a crashed earlier attempt left (its source is still
    there; a later run copies it again).

    :meth:`commit` drops the kept entries once the new copy is verified and
    durable.
    """

    backend: Backend
    target: str
    existed: bool
    dirs: set[str] = field(default_factory=set)
    created_meta: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    undone: bool = False
    """Set once :meth:`undo` restored everything."""

    @property
    def replaced_dir(self) -> str:
        return join(self.target, REPLACED_DIR)

    @classmethod
    async def snapshot(cls, backend: Backend, target: str, meta_names: list[str]) -> Rollback:
        (st,) = await backend.stat([target])
        entries = await backend.walk(target) if st is not None else []
        meta = join(target, META_DIR)
        # The folder the run's own lock created is not "existing content".
        content = [p for p, _ in entries if p != meta and not p.startswith(f"{meta}/lock")]
        rollback = cls(backend, target, existed=bool(content))
        if not content:
            rollback.created_meta = [join(meta, name) for name in meta_names]
            return rollback
        rollback.dirs = {target} | {p for p, s in entries if s.kind == "dir"}
        for name in meta_names:
            path = join(target, META_DIR, name)
            kept = join(rollback.replaced_dir, META_DIR, name)
            data = await backend.read_bytes(path)
            if data is None:
                rollback.created_meta.append(path)
            elif (await backend.stat([kept]))[0] is None:
                await backend.write_bytes(kept, data)
        return rollback

    async def undo(self) -> list[str]:
        """Restore the folder; returns what could not be done (with the reason)."""
        problems: list[str] = []
        root = self.replaced_dir
        kept = {
            join(self.target, p[len(root) + 1 :]): p
            for p, st in await self.backend.walk(root)
            if st.kind != "dir"
        }
        for path in sorted({*self.written, *self.created_meta} - kept.keys()):
            try:
                await self.backend.remove(path)
            except FinalcopyError as exc:
                problems.append(str(exc))
        for final, aside in sorted(kept.items()):
            try:
                await self.backend.remove(final)  # this run's copy; its source is still there
                await self.backend.rename(aside, final)
            except FinalcopyError as exc:
                problems.append(f"{exc} (the previous version is kept in '{aside}')")
        if not problems:
            await self.commit()  # only empty folders are left in it
            await self._drop_empty_dirs()
            self.undone = True
        return problems

    async def commit(self) -> None:
        """The new copy is final: the entries it replaced are no longer needed."""
        with contextlib.suppress(FinalcopyError):
            if (await self.backend.stat([self.replaced_dir]))[0] is not None:
                await remove_tree(self.backend, self.replaced_dir)

    async def _drop_empty_dirs(self) -> None:
        now = [p for p, st in await self.backend.walk(self.target) if st.kind == "dir"]
        created = [p for p in now if p not in self.dirs]
        if not self.existed:
            created.append(self.target)
        for path in sorted(created, key=lambda d: -d.count("/")):
            if path == join(self.target, META_DIR) or path.startswith(
                join(self.target, META_DIR) + "/"
            ):
                continue  # the lock lives there until release; it tidies that folder
            with contextlib.suppress(FinalcopyError):
                await self.backend.remove(path)
