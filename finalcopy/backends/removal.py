"""Removing a folder and everything below it through a backend, never following a link.

One helper for every removal of a whole tree that is finalcopy's own: a
rollback's kept entries, a released lock, a benchmark's folder. It lists
the tree with :meth:`Backend.walk` (which never goes through a link), removes
the files several at a time (:func:`~.fanout.each_tried`: over SFTP each
removal is a round trip), then the folders, children first, then ``path``
itself.
"""

from __future__ import annotations

from finalcopy.backends.base import Backend
from finalcopy.backends.fanout import each_tried

__all__ = ["remove_tree"]


async def remove_tree(backend: Backend, path: str) -> None:
    """Remove ``path`` and everything below it; the first error once every file was tried."""
    entries = await backend.walk(path)
    await each_tried((rel for rel, st in entries if st.kind != "dir"), backend.remove)
    folders = [rel for rel, st in entries if st.kind == "dir"]
    for rel in sorted(folders, key=lambda rel: -rel.count("/")):  # children first
        await backend.remove(rel)
    await backend.remove(path)
