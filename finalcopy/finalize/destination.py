"""Where projects go: the output, else ``FALLBACK_OUTPUT_DIR``, else ``BASE/_finalized_output``.

Each candidate is proven usable by writing and deleting a probe file
(``Backend.prepare``), which, unlike ``os.access``, sees read-only mounts,
full disks, ACLs and remote permissions. The output and the fallback must
already exist: they are mount points, and creating a missing mount point's
folder would quietly fill the system disk instead. ``_finalized_output/`` is
created when needed. In a dry run nothing is written: existence and
``os.access`` stand in for the probe.

Taking anything but the output is recorded as a :class:`Fallback` (the run
warns about it); with ``no_fallback`` only the output is tried.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from finalcopy.backends import Backend, open_backend
from finalcopy.errors import FinalcopyError
from finalcopy.finalize.report import Fallback
from finalcopy.finalize.settings import Settings
from finalcopy.paths import nearest_existing


@dataclass
class Destination:
    """The chosen destination, or ``backend=None`` when none is usable."""

    backend: Backend | None
    dest: str = ""
    notes: list[str] = field(default_factory=list)
    """One line per candidate that was passed over, with the reason."""
    fallback: Fallback = field(default_factory=Fallback)
    """Set (``used``) when a candidate other than the output was chosen."""

    @property
    def describe(self) -> str:
        return self.backend.describe("") if self.backend is not None else ""


async def _try(
    settings: Settings, label: str, dest: str, must_exist: bool
) -> tuple[Backend | None, str]:
    """The backend for ``dest`` if usable, else None and why."""
    local = settings.local_output() if dest == settings.output else Path(dest)
    if local is not None and local.resolve() == settings.work_dir.resolve():
        return None, f"{label} '{dest}' is the work directory itself"
    try:
        backend = await open_backend(dest, settings.destination)
    except FinalcopyError as exc:
        return None, f"{label} '{dest}' cannot be opened: {exc}"
    try:
        if must_exist:
            (st,) = await backend.stat([""])
            if st is None or st.kind != "dir":
                what = "does not exist" if st is None else "is not a folder"
                raise FinalcopyError(f"{label} '{dest}' {what}")
        if settings.dry_run:
            if local is not None and not _writable_without_writing(local):
                raise FinalcopyError(f"{label} '{dest}' is not writable")
        else:
            await backend.prepare()
    except FinalcopyError as exc:
        with contextlib.suppress(FinalcopyError):
            await backend.aclose()
        message = str(exc)
        return None, message if message.startswith(label) else f"{label} '{dest}': {message}"
    return backend, ""


def _writable_without_writing(path: Path) -> bool:
    """Dry-run stand-in for the probe: the nearest existing folder is writable by us."""
    target = nearest_existing(path)
    return target.is_dir() and os.access(target, os.W_OK | os.X_OK)


async def choose_destination(settings: Settings) -> Destination:
    """Try the output, the fallback and the last resort in order; see the module docstring."""
    candidates: list[tuple[str, str, bool]] = [("output", settings.output, True)]
    if not settings.no_fallback:
        if settings.fallback_output is not None:
            candidates.append(("FALLBACK_OUTPUT_DIR", str(settings.fallback_output), True))
        candidates.append(("fallback", str(settings.last_resort_output), False))
    notes: list[str] = []
    for label, dest, must_exist in candidates:
        backend, why = await _try(settings, label, dest, must_exist)
        if backend is not None:
            fallback = Fallback()
            if notes:
                fallback = Fallback(
                    used=True,
                    reason="; ".join(notes),
                    intended=settings.output,
                    used_destination=backend.describe(""),
                )
            return Destination(backend, dest, notes, fallback)
        notes.append(why)
    return Destination(None, "", notes)


async def free_name(backend: Backend, name: str, word: str, moment: datetime | None = None) -> str:
    """``{name}__{word}_YYYYmmdd_HHMMSS[_n]``, the first that does not exist on ``backend``."""
    stamp = (moment or datetime.now()).strftime("%Y%m%d_%H%M%S")
    base = f"{name}__{word}_{stamp}"
    candidate, n = base, 1
    while (await backend.stat([candidate]))[0] is not None:
        candidate = f"{base}_{n}"
        n += 1
    return candidate
