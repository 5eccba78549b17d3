"""One run at a time per project: an ``flock`` on ``WORK/.finalcopy/locks/<project>.lock``.

The kernel drops the lock when its holder dies (even by ``kill -9``), so a
stale lock file never blocks a later run. The file is unlinked on release;
a run that locked a file which was unlinked meanwhile sees a different inode
and tries again, so two runs can never both hold "the" lock of a project.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType


class ProjectLock:
    """Non-blocking exclusive lock; ``acquire()`` returns False when another run holds it."""

    def __init__(self, folder: Path, project: str) -> None:
        self.path = folder / f"{project}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                # First lock here, or another run just tidied the empty folder away.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return True
            os.close(fd)  # unlinked by its previous holder meanwhile: lock the new file

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> ProjectLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
