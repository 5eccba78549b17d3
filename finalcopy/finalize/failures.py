"""Why one project is not finalized; each leaves its source in place.

Where they sit in finalcopy's tree (:mod:`finalcopy.errors`)::

    FinalcopyError
     ├── ProjectFailure      the project cannot be finalized (not ready at the destination,
     │                       no room, a copy failed, part of the source changed...)
     ├── UnsafeDeletion      a removal would reach ARCHIVES_DIR or leave the work directory
     └── UnsafeMetadata      WORK/.finalcopy/ holds a link or something finalcopy did not make

The project's result says ``failed`` with the message; the run goes on with
the next project.
"""

from __future__ import annotations

from finalcopy.errors import FinalcopyError


class ProjectFailure(FinalcopyError):
    """The project cannot be finalized; its source is kept."""


class UnsafeDeletion(FinalcopyError):
    """A removal would reach ARCHIVES_DIR or leave the work directory; nothing was removed."""


class UnsafeMetadata(FinalcopyError):
    """A path in ``WORK/.finalcopy/`` is a symbolic link or not what finalcopy made there."""
