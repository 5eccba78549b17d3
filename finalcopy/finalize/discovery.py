"""Which folders of the work directory are projects, and which of them are ready.

Readiness is a pure function of a project's relative file paths
(:func:`assess`), so the same rule judges the source before the copy and the
destination after it, whatever backend holds it.

For a video ``{stem}.{ext}`` (``.mp4 .mov .avi .mkv .webm``, any case) the
artifacts are the scenes CSV ``{stem}_scenes.csv`` or ``{stem}.csv``, the
tracking JSON ``{stem}_tracking.json`` and the audio JSON
``{stem}_audio.json``. Each is looked up next to the video first, then
anywhere in the project (as the original's ``rglob`` did).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finalcopy.choices import Mode
from finalcopy.engine import META_DIR
from finalcopy.paths import is_inside
from finalcopy.tree import WalkFailure, walk_tree

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
ArtifactKind = str  # "scenes" | "tracking" | "audio"


@dataclass(frozen=True)
class Readiness:
    """The verdict of :func:`assess` for one mode."""

    ready: bool
    basis: str | None
    """The video that makes the project ready (relative path)."""
    reason: str
    """Why it is not ready (empty when ready)."""
    videos: tuple[str, ...] = ()
    artifacts: dict[str, ArtifactKind] = field(default_factory=dict)
    """Every analysis artifact found for any video: relative path → kind."""


def is_video(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _find(name: str, folder: str, by_name: dict[str, list[str]]) -> str | None:
    """``folder/name`` if present, else the first ``name`` anywhere (sorted)."""
    candidates = by_name.get(name)
    if not candidates:
        return None
    near = posixpath.join(folder, name) if folder else name
    return near if near in candidates else candidates[0]


def assess(files: Iterable[str], mode: Mode) -> Readiness:
    """Apply the readiness rule of ``mode`` to a project's files (relative POSIX paths).

    strict: scenes CSV and tracking JSON for some video; lenient: any one
    artifact for some video; videos: any video.
    """
    paths = sorted(files)
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(posixpath.basename(path), []).append(path)
    videos = tuple(p for p in paths if is_video(p))
    artifacts: dict[str, ArtifactKind] = {}
    basis: str | None = None
    for video in videos:
        folder, name = posixpath.split(video)
        stem = posixpath.splitext(name)[0]
        found: dict[str, str | None] = {
            "scenes": _find(f"{stem}_scenes.csv", folder, by_name)
            or _find(f"{stem}.csv", folder, by_name),
            "tracking": _find(f"{stem}_tracking.json", folder, by_name),
            "audio": _find(f"{stem}_audio.json", folder, by_name),
        }
        for kind, hit in found.items():
            if hit is not None:
                artifacts.setdefault(hit, kind)
        if basis is None and (
            mode == "videos"
            or (mode == "strict" and found["scenes"] and found["tracking"])
            or (mode == "lenient" and any(found.values()))
        ):
            basis = video
    if basis is not None:
        return Readiness(True, basis, "", videos, artifacts)
    if not videos:
        reason = f"no video file ({' '.join(VIDEO_EXTENSIONS)})"
    elif mode == "strict":
        reason = f"no video of {len(videos)} has both a scenes CSV and a tracking JSON (strict)"
    else:
        reason = (
            f"no video of {len(videos)} has a scenes CSV, tracking JSON or audio JSON (lenient)"
        )
    return Readiness(False, None, reason, videos, artifacts)


@dataclass
class ProjectFiles:
    """A local project folder as the copy will see it."""

    files: dict[str, int] = field(default_factory=dict)
    """Relative path → size."""

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def list_project(root: Path) -> ProjectFiles:
    """Regular files below ``root`` (links not followed, ``.finalcopy/`` left out)."""
    out = ProjectFiles()
    for rel, st in walk_tree(root, skip=(META_DIR,), onerror=_ignore):
        if stat.S_ISREG(st.st_mode):
            out.files[rel] = st.st_size
    return out


def _ignore(failure: WalkFailure) -> None:
    """Unreadable entries are left to the engine, which reports them with their cause."""


@dataclass
class Candidate:
    """One folder of the work directory and what discovery concluded about it."""

    name: str
    path: Path
    readiness: Readiness
    files: ProjectFiles
    excluded: str = ""
    """Why the folder is not a project at all (protected folder, link)."""

    @property
    def ready(self) -> bool:
        return not self.excluded and self.readiness.ready

    @property
    def reason(self) -> str:
        return self.excluded or self.readiness.reason


def discover(
    work_dir: Path, mode: Mode, protected: Sequence[Path], archives_dir: Path
) -> list[Candidate]:
    """Every non-hidden folder of ``work_dir``, sorted, judged by ``mode``.

    Folders equal to, or holding, a ``protected`` path or ``archives_dir``
    (archives, logs, outputs placed inside the work directory) are never
    projects, and neither are symbolic links: deleting through them would
    reach outside the work directory. Nor is any folder inside
    ``archives_dir`` (a work directory placed under it): nothing there is
    ever deleted.
    """
    guarded = [p.resolve() for p in [*protected, archives_dir]]
    archives = archives_dir.resolve()
    out: list[Candidate] = []
    for entry in sorted(os.scandir(work_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=True):
            continue
        path = Path(entry.path)
        empty = Readiness(False, None, "")
        if entry.is_symlink():
            out.append(Candidate(entry.name, path, empty, ProjectFiles(), "a symbolic link"))
            continue
        real = path.resolve()
        clash = next((g for g in guarded if is_inside(g, real)), None)
        if clash is None and is_inside(real, archives):
            clash = archives
        if clash is not None:
            out.append(
                Candidate(entry.name, path, empty, ProjectFiles(), f"protected folder ({clash})")
            )
            continue
        files = list_project(path)
        out.append(Candidate(entry.name, path, assess(files.files, mode), files))
    return out
