"""Destinations as typed on the command line: refuse what looks like a mistyped URL.

A destination that is neither a clean path nor a clean remote would otherwise
become a local folder named after the typo (``./sftp/host/x``), and the copy
would "succeed" in the wrong place. Nothing is guessed: the user is told what
was probably meant and how to say "a local folder" explicitly (``./…``).
"""

from __future__ import annotations

import re
from pathlib import Path

from finalcopy.cli.runtime import fail
from finalcopy.errors import EXIT_DESTINATION, EXIT_USAGE

_SCHEME = r"(?P<scheme>sftp|ssh|scp|ftp|ftps|https?|file|smb|rsync|webdav)"
_TYPOS: tuple[tuple[re.Pattern[str], str], ...] = (
    # sftp//host/x, sftp:/host/x, sftp:\\host: the "://" is damaged.
    (re.compile(_SCHEME + r"(//|:/(?!/)|:\\\\|/:/)", re.IGNORECASE), "a damaged '://'"),
    # sftp:///x, sftp://:22/x, sftp://user@/x: no host.
    (re.compile(r"[A-Za-z][\w+.-]*://(?:[^/@]*@)?(?::\d*)?(?:/|$)"), "an empty host"),
    # user@:path, @host:path, :path: an empty host or user before the colon.
    (re.compile(r"(?:[^/:@]*@:|@[^/]*:|:)"), "an empty host or user"),
)


def check_destination(dest: str, option: str = "destination") -> None:
    """A usage error (exit 2) with a hint if ``dest`` looks like a mistyped remote."""
    if dest.startswith(("/", "./", "../", "~")):
        return  # explicitly a path
    for pattern, what in _TYPOS:
        if pattern.match(dest):
            fail(
                f"{option} '{dest}': looks like a mistyped remote ({what}); write "
                "sftp://[user@]host[:port]/path or [user@]host:path, or ./"
                f"{dest} for a local folder of that name",
                EXIT_USAGE,
            )


def check_not_a_file(dest: str) -> None:
    """A local destination that exists as a file cannot become a folder: say so (exit 3)."""
    from finalcopy.backends.registry import parse_destination

    location = parse_destination(dest)
    if isinstance(location, Path) and location.exists() and not location.is_dir():
        fail(f"destination '{dest}': exists and is a file, not a folder", EXIT_DESTINATION)
