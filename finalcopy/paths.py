"""Local path questions asked in several places, answered once.

Both helpers are lexical about the paths they are given: callers that must
see through symbolic links resolve first (``Path.resolve``), as the safety
checks do.
"""

from __future__ import annotations

from pathlib import Path


def is_inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or below it (compared component by component).

    ``/data/archives2`` is not inside ``/data/archives``, which a string
    prefix test would get wrong.
    """
    return child.is_relative_to(parent)


def nearest_existing(path: Path) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists.

    For questions about a folder that may not be created yet (is it
    writable? which file system will hold it?): the answer is the one of the
    deepest part that exists.
    """
    target = path.absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    return target
