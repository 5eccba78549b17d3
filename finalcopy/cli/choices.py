"""The closed choices of the options, as enums: typer lists them in ``--help`` and checks them.

The values are the engine's own names (``str(choice)`` is what the engine takes).
"""

from __future__ import annotations

import enum


class HashName(enum.StrEnum):
    """The hash taken while streaming and written to the manifest."""

    blake3 = "blake3"
    sha256 = "sha256"
    xxh128 = "xxh128"


class VerifyChoice(enum.StrEnum):
    """How each committed file is proven."""

    readback = "readback"
    size = "size"
    none = "none"


class MetadataChoice(enum.StrEnum):
    """Whether mode and mtime are kept."""

    auto = "auto"
    posix = "posix"
    none = "none"


class NamesChoice(enum.StrEnum):
    """What to do with names NTFS cannot hold."""

    reject = "reject"
    map = "map"


class ModeChoice(enum.StrEnum):
    """Which projects are ready."""

    strict = "strict"
    lenient = "lenient"
    videos = "videos"


class OnExistingChoice(enum.StrEnum):
    """What to do when OUTPUT/<project> exists."""

    MERGE = "merge"
    REPLACE = "replace"
    RENAME = "rename"
