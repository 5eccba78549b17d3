"""One run at a time per project of a work directory: ``WORK/.finalcopy/locks/<project>.lock``.

An ``flock`` on that file; the kernel drops the lock when its holder dies
(even by ``kill -9``), so a stale lock file never blocks a later run. The
file is unlinked on release; a run that locked a file which was unlinked
meanwhile sees a different inode and tries again, so two runs can never both
hold "the" lock of a project. The folder and the file are opened without
following links (:mod:`finalcopy.finalize.metadir`): a planted link is
refused, never truncated through.

This lock guards the source side; the destination folder has its own lock
(:mod:`finalcopy.engine.lock`), which also keeps out runs of other work
directories and other hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from finalcopy.finalize.metadir import open_private_dir

PARTS = (".finalcopy", "locks")


class ProjectLock:
    """Non-blocking exclusive lock; ``acquire()`` returns False when another run holds it."""

    def __init__(self, work_dir: Path, project: str) -> None:
        self.work_dir = work_dir
        self.name = f"{project}.lock"
        self.path = work_dir.joinpath(*PARTS, self.name)
        self._fd: int | None = None
        self._dir: int | None = None

    def acquire(self) -> bool:
        folder = open_private_dir(self.work_dir, *PARTS)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            while True:
                fd = os.open(self.name, flags, 0o644, dir_fd=folder)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return False
                try:
                    st = os.stat(self.name, dir_fd=folder, follow_symlinks=False)
                    same = st.st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self._fd, self._dir, folder = fd, folder, -1
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return True
                os.close(fd)  # unlinked by its previous holder meanwhile: lock the new file
        finally:
            if folder >= 0:
                os.close(folder)

    def release(self) -> None:
        if self._fd is None or self._dir is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self._dir)
        os.close(self._fd)
        os.close(self._dir)
        self._fd = self._dir = None
