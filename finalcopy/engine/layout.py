"""Where each path of a plan lands at the destination, and the temporary name it is written under.

Two things are settled here once for the whole copy:

* **stored names**: a backend may store a path under another name (NTFS with
  ``--ntfs-names map``); every destination path goes through
  :meth:`~finalcopy.backends.base.Backend.dest_name`, after the backend has
  seen the whole plan (:meth:`~finalcopy.backends.base.Backend.name_problems`);
* **temporary names never equal a planned name**: a source may hold a file
  named exactly like a sibling's temporary name (or an interrupted copy's
  leftover); it is copied like any other, and the sibling's temporary file
  takes another name of the same shape (:func:`~finalcopy.backends.base.temp_name`
  with a salt).
"""

from __future__ import annotations

from finalcopy.backends.base import Backend, is_temp_name, join, temp_name
from finalcopy.engine.plan import META_DIR, Plan
from finalcopy.errors import UnsafeNameError


class Layout:
    """The destination paths of one copy of ``plan`` to ``dest`` on ``backend``."""

    def __init__(self, backend: Backend, dest: str, plan: Plan) -> None:
        """The backend sees every planned name first: :class:`UnsafeNameError` if it refuses any."""
        self.backend = backend
        self.dest = dest
        self.plan = plan
        problems = backend.name_problems([join(dest, p) for p in self._planned()])
        if problems:
            raise UnsafeNameError(problems)
        self._root = self.path("")
        self._temp_like = {
            self.path(path)
            for path in (*(f.path for f in plan.files), *(lk.path for lk in plan.links))
            if is_temp_name(path.rpartition("/")[2])
        }
        """Planned names that look like temporary names: no temporary file may take one."""

    def path(self, rel: str) -> str:
        """Where ``rel`` (relative to the source) is stored, relative to the backend's root."""
        return self.backend.dest_name(join(self.dest, rel))

    def meta(self, name: str) -> str:
        """Where finalcopy's own file ``name`` of ``.finalcopy/`` is stored."""
        return self.path(join(META_DIR, name))

    def temp(self, final: str) -> str:
        """The temporary file for the destination path ``final``: beside it, never planned.

        Empty, the backend's default (:func:`temp_name` of the final name), when no planned
        name looks like a temporary one: the common case, where the default cannot collide,
        and which leaves the hashing of the name to the thread or process that sends it.
        """
        if not self._temp_like:
            return ""
        folder, _, name = final.rpartition("/")
        salt = 0
        while (candidate := join(folder, temp_name(name, salt))) in self._temp_like:
            salt += 1
        return candidate

    def stored(self, rel: str) -> str:
        """``rel`` as stored, relative to ``dest``: what the manifest lists."""
        return self.path(rel)[len(self._root) :].lstrip("/")

    def renamed(self) -> dict[str, str]:
        """Original → stored path of every planned path the backend stores under another name."""
        return {p: s for p in self._planned() if (s := self.stored(p)) != p}

    def _planned(self) -> list[str]:
        plan = self.plan
        return [
            *(d.path for d in plan.dirs if d.path),
            *(f.path for f in plan.files),
            *(lk.path for lk in plan.links),
        ]
